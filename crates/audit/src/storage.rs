//! On-disk pieces shared by the writer and the read-only verifier: file names, the
//! record framing, a sequential record scanner and positional reads of the tree file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::merkle::{Hash, NodeSource, postorder_position, sha256};

/// Metadata: format, origin and verifier key.
pub(crate) const META_FILE: &str = "log.json";
/// The entries, framed (the source of truth).
pub(crate) const ENTRIES_FILE: &str = "entries.bin";
/// End offset of every entry record (derived; rebuilt from the entries if missing).
pub(crate) const INDEX_FILE: &str = "entries.idx";
/// Complete-subtree hashes in post-order (derived; rebuilt from the entries if missing).
pub(crate) const TREE_FILE: &str = "tree.bin";
/// Signed checkpoints, framed like entries.
pub(crate) const CHECKPOINTS_FILE: &str = "checkpoints.bin";
/// Lock file held by the one writer.
pub(crate) const LOCK_FILE: &str = "lock";

/// Format tag written in the metadata file.
pub(crate) const FORMAT: &str = "blindwatch-audit-log/1";

/// Bytes before a record's payload: u32 BE length, u64 BE index.
pub(crate) const RECORD_HEADER: usize = 12;
/// Bytes after a record's payload: SHA-256 checksum.
pub(crate) const RECORD_TRAILER: usize = 32;
/// Largest payload accepted. Entries hold ids and counts; checkpoints a few lines.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The metadata file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Meta {
    pub(crate) format: String,
    pub(crate) origin: String,
    pub(crate) verifier_key: String,
}

fn checksum(header: &[u8; RECORD_HEADER], payload: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(RECORD_HEADER + payload.len());
    buf.extend_from_slice(header);
    buf.extend_from_slice(payload);
    sha256(&buf)
}

fn header(index: u64, len: usize) -> [u8; RECORD_HEADER] {
    let mut h = [0u8; RECORD_HEADER];
    // len <= MAX_ENTRY_BYTES, checked by callers, so it fits in u32.
    h[..4].copy_from_slice(&(len as u32).to_be_bytes());
    h[4..].copy_from_slice(&index.to_be_bytes());
    h
}

/// Appends one framed record to `out`: `len ‖ index ‖ payload ‖ SHA-256(len ‖ index ‖ payload)`.
pub(crate) fn encode_record(index: u64, payload: &[u8], out: &mut Vec<u8>) {
    let h = header(index, payload.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(&h, payload));
}

/// Total framed size of a payload.
pub(crate) fn framed_len(payload_len: usize) -> u64 {
    (RECORD_HEADER + payload_len + RECORD_TRAILER) as u64
}

/// One step of a sequential scan.
#[derive(Debug)]
pub(crate) enum Scan {
    /// A whole record with a correct checksum.
    Record { index: u64, payload: Vec<u8> },
    /// A whole record whose checksum is wrong; the length looked sane, so scanning may go on.
    BadChecksum { index: u64, payload: Vec<u8> },
    /// Clean end of file at a record boundary.
    End,
    /// The file ends inside a record (a torn write).
    Torn,
    /// The length field is impossible; the rest of the file cannot be framed.
    BadLength,
}

/// Reads framed records one after another.
pub(crate) struct Scanner<R> {
    reader: R,
    offset: u64,
}

impl Scanner<BufReader<File>> {
    /// Scans `file` from byte `offset`.
    pub(crate) fn open_at(file: &File, offset: u64) -> io::Result<Self> {
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, f),
            offset,
        })
    }
}

impl<R: Read> Scanner<R> {
    /// Byte offset of the next record.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record. On `Torn`/`BadLength` the offset stays at the record's start.
    pub(crate) fn next_record(&mut self) -> io::Result<Scan> {
        let mut h = [0u8; RECORD_HEADER];
        match read_full(&mut self.reader, &mut h)? {
            0 => return Ok(Scan::End),
            n if n < RECORD_HEADER => return Ok(Scan::Torn),
            _ => {}
        }
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let mut index_bytes = [0u8; 8];
        index_bytes.copy_from_slice(&h[4..]);
        let index = u64::from_be_bytes(index_bytes);
        if len == 0 || len > MAX_ENTRY_BYTES {
            return Ok(Scan::BadLength);
        }
        let mut rest = vec![0u8; len + RECORD_TRAILER];
        if read_full(&mut self.reader, &mut rest)? < rest.len() {
            return Ok(Scan::Torn);
        }
        let sum = rest.split_off(len);
        self.offset += framed_len(len);
        if sum == checksum(&h, &rest) {
            Ok(Scan::Record {
                index,
                payload: rest,
            })
        } else {
            Ok(Scan::BadChecksum {
                index,
                payload: rest,
            })
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads one record that must lie exactly at `[start, end)` and carry `index`.
pub(crate) fn read_record_at(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    index: u64,
) -> Result<Vec<u8>, AuditError> {
    let bad = |what: &str| AuditError::corrupt(path, start, what);
    let total = end
        .checked_sub(start)
        .filter(|t| *t >= framed_len(1) && *t <= framed_len(MAX_ENTRY_BYTES))
        .ok_or_else(|| bad("the index gives an impossible record length"))?;
    let mut buf = vec![0u8; total as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| AuditError::io("read", path, e))?;
    let mut scanner = Scanner {
        reader: buf.as_slice(),
        offset: start,
    };
    match scanner
        .next_record()
        .map_err(|e| AuditError::io("read", path, e))?
    {
        Scan::Record {
            index: found,
            payload,
        } if found == index && framed_len(payload.len()) == total => Ok(payload),
        Scan::Record { .. } => Err(bad(&format!(
            "the record here is not entry {index} as the index says"
        ))),
        _ => Err(bad(&format!(
            "entry {index} has a damaged length or checksum"
        ))),
    }
}

/// Opens (creating if needed) a file for positional reads and writes.
pub(crate) fn open_rw(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| AuditError::io("open", path, e))
}

/// Opens a file read-only; `None` if it does not exist.
pub(crate) fn open_ro(path: &Path) -> Result<Option<File>, AuditError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AuditError::io("open", path, e)),
    }
}

pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64, AuditError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| AuditError::io("read the size of", path, e))
}

/// Makes directory entries (new files, renames) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("sync", dir, e))
}

/// Reads the u64 BE at slot `slot` of an index file.
pub(crate) fn read_u64_at(file: &File, path: &Path, slot: u64) -> Result<u64, AuditError> {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, slot * 8)
        .map_err(|e| AuditError::io("read", path, e))?;
    Ok(u64::from_be_bytes(b))
}

/// Positional access to the tree file.
pub(crate) struct TreeFile<'a> {
    pub(crate) file: &'a File,
    pub(crate) path: &'a Path,
    /// Nodes the file is known to hold.
    pub(crate) nodes: u64,
}

impl NodeSource for TreeFile<'_> {
    fn node(&self, level: u32, index: u64) -> Result<Hash, AuditError> {
        let pos = postorder_position(level, index);
        if pos >= self.nodes {
            return Err(AuditError::corrupt(
                self.path,
                self.nodes * 32,
                format!("node ({level}, {index}) is past the end of the tree file"),
            ));
        }
        let mut h = [0u8; 32];
        self.file
            .read_exact_at(&mut h, pos * 32)
            .map_err(|e| AuditError::io("read", self.path, e))?;
        Ok(h)
    }
}

/// Writes `bytes` at `offset` (not yet durable).
pub(crate) fn write_at(
    file: &File,
    path: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<(), AuditError> {
    file.write_all_at(bytes, offset)
        .map_err(|e| AuditError::io("write", path, e))
}

/// Flushes a file's data (and its size) to stable storage.
pub(crate) fn sync(file: &File, path: &Path) -> Result<(), AuditError> {
    file.sync_data()
        .map_err(|e| AuditError::io("sync", path, e))
}

/// Writes `bytes` at `offset` and flushes them to stable storage.
pub(crate) fn write_durably(
    file: &File,
    path: &Path,
    offset: u64,
    bytes: &[u8],
) -> Result<(), AuditError> {
    write_at(file, path, offset, bytes)?;
    sync(file, path)
}

/// Cuts a file to `len` bytes durably.
pub(crate) fn truncate(file: &File, path: &Path, len: u64) -> Result<(), AuditError> {
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io("truncate", path, e))
}

/// Paths of a log directory's files.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    pub(crate) meta: PathBuf,
    pub(crate) entries: PathBuf,
    pub(crate) index: PathBuf,
    pub(crate) tree: PathBuf,
    pub(crate) checkpoints: PathBuf,
    pub(crate) lock: PathBuf,
}

impl Paths {
    pub(crate) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            meta: dir.join(META_FILE),
            entries: dir.join(ENTRIES_FILE),
            index: dir.join(INDEX_FILE),
            tree: dir.join(TREE_FILE),
            checkpoints: dir.join(CHECKPOINTS_FILE),
            lock: dir.join(LOCK_FILE),
        }
    }
}

/// Reads and parses the metadata file; `None` if it does not exist.
pub(crate) fn read_meta(path: &Path) -> Result<Option<Meta>, AuditError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io("read", path, e)),
    };
    let meta: Meta = serde_json::from_slice(&bytes)
        .map_err(|_| AuditError::corrupt(path, 0, "the metadata is not valid JSON of this log"))?;
    if meta.format != FORMAT {
        return Err(AuditError::corrupt(
            path,
            0,
            format!("the log format is not {FORMAT}; use a matching version of Blindwatch"),
        ));
    }
    Ok(Some(meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_detects_torn_and_damaged_records() {
        let mut buf = Vec::new();
        encode_record(0, b"first", &mut buf);
        encode_record(1, b"second", &mut buf);
        let whole = buf.len();
        // Every cut inside the second record is torn; the first stays readable.
        for cut in (framed_len(5) as usize + 1)..whole {
            let mut s = Scanner {
                reader: &buf[..cut],
                offset: 0,
            };
            assert!(matches!(
                s.next_record().unwrap(),
                Scan::Record { index: 0, .. }
            ));
            assert!(matches!(s.next_record().unwrap(), Scan::Torn), "cut {cut}");
            assert_eq!(s.offset(), framed_len(5));
        }
        // A flipped payload byte is a checksum failure.
        let mut damaged = buf.clone();
        damaged[RECORD_HEADER + 1] ^= 1;
        let mut s = Scanner {
            reader: damaged.as_slice(),
            offset: 0,
        };
        assert!(matches!(s.next_record().unwrap(), Scan::BadChecksum { .. }));
        assert!(matches!(
            s.next_record().unwrap(),
            Scan::Record { index: 1, .. }
        ));
        assert!(matches!(s.next_record().unwrap(), Scan::End));
        // A zero length is impossible.
        let zeros = [0u8; 64];
        let mut s = Scanner {
            reader: zeros.as_slice(),
            offset: 0,
        };
        assert!(matches!(s.next_record().unwrap(), Scan::BadLength));
    }
}
