//! The writer: [`AuditLog`].

use std::fs::{self, File, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::bundle::InclusionBundle;
use crate::checkpoint::{Checkpoint, LogPublicKey, LogSigner};
use crate::error::AuditError;
use crate::event::AuditRecord;
use crate::merkle::{
    self, EMPTY_ROOT, Frontier, Hash, NodeSource as _, leaf_hash, leaves_for_nodes, stored_nodes,
};
use crate::storage::{
    self, FORMAT, MAX_ENTRY_BYTES, Meta, Paths, Scan, Scanner, TreeFile, encode_record, file_len,
    framed_len, open_rw, read_record_at, read_u64_at, sync, sync_dir, truncate, write_at,
    write_durably,
};

/// Records indexed per write when recovery rebuilds the derived files.
const REBUILD_CHUNK: usize = 8192;

/// An append-only, tamper-evident audit log in one directory.
///
/// One process writes a log at a time (an exclusive lock on `lock` enforces it). Every
/// `append`/`append_batch` returns only after the entries, their index and their tree
/// nodes are on stable storage. See the crate docs for the on-disk format.
///
/// All methods do blocking file I/O (appends and checkpoints fsync); async callers should
/// run them on a blocking thread (e.g. `tokio::task::spawn_blocking`) behind a mutex.
#[derive(Debug)]
pub struct AuditLog {
    paths: Paths,
    signer: LogSigner,
    entries: File,
    index: File,
    tree: File,
    checkpoints: File,
    // Held for the lifetime of the log: dropping the file releases the lock.
    _lock: File,
    /// Bytes of the entries file holding acknowledged entries.
    entries_len: u64,
    /// Right edge of the tree; its size is the number of entries.
    frontier: Frontier,
    checkpoints_len: u64,
    checkpoint_count: u64,
    latest: Option<Checkpoint>,
    /// Set when a write failed half-way: the files may hold a partial tail.
    poisoned: bool,
}

impl AuditLog {
    /// Opens the log in `dir`, creating it (and the directory) if it does not exist.
    ///
    /// Recovers from a crash: a torn or unindexed tail of the entries file is truncated to
    /// the last whole entry or re-indexed; derived files (`entries.idx`, `tree.bin`) are
    /// repaired from the entries. It never drops an entry covered by a signed checkpoint:
    /// if a checkpoint covers more entries than the log holds, opening fails.
    pub fn open(dir: impl AsRef<Path>, signer: LogSigner) -> Result<Self, AuditError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|e| AuditError::io("create", dir, e))?;
        let paths = Paths::new(dir);
        let lock = open_rw(&paths.lock)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(AuditError::InUse {
                    path: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(AuditError::io("lock", &paths.lock, e)),
        }
        check_or_create_meta(&paths, signer.public_key())?;
        let entries = open_rw(&paths.entries)?;
        let index = open_rw(&paths.index)?;
        let tree = open_rw(&paths.tree)?;
        let checkpoints = open_rw(&paths.checkpoints)?;
        // Make freshly created files part of the directory durably.
        sync_dir(dir)?;
        let mut log = Self {
            paths,
            signer,
            entries,
            index,
            tree,
            checkpoints,
            _lock: lock,
            entries_len: 0,
            frontier: Frontier::default(),
            checkpoints_len: 0,
            checkpoint_count: 0,
            latest: None,
            poisoned: false,
        };
        log.recover()?;
        Ok(log)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The verifier key of this log (hand `to_vkey()` to auditors and partners).
    pub fn public_key(&self) -> &LogPublicKey {
        self.signer.public_key()
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Root hash of the whole log.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The latest signed checkpoint, if any.
    pub fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.latest.as_ref()
    }

    /// Appends one record durably and returns its index.
    pub fn append(&mut self, record: &AuditRecord) -> Result<u64, AuditError> {
        self.append_batch(std::slice::from_ref(record))
            .map(|range| range.start)
    }

    /// Appends records with one group commit (one fsync per file for the whole batch) and
    /// returns their index range. After a crash, a prefix of the batch may survive: every
    /// whole record that reached the disk is kept.
    pub fn append_batch(&mut self, records: &[AuditRecord]) -> Result<Range<u64>, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let first = self.size();
        if records.is_empty() {
            return Ok(first..first);
        }
        let mut payloads = Vec::with_capacity(records.len());
        for record in records {
            let bytes = record.to_canonical_json()?;
            if bytes.len() > MAX_ENTRY_BYTES {
                return Err(AuditError::EntryTooLarge {
                    size: bytes.len(),
                    max: MAX_ENTRY_BYTES,
                });
            }
            payloads.push(bytes);
        }
        let mut frontier = self.frontier.clone();
        let (entry_bytes, index_bytes, nodes) =
            encode_batch(first, self.entries_len, &payloads, &mut frontier);
        let result = self.write_batch(first, &entry_bytes, &index_bytes, &nodes);
        if result.is_err() {
            // The files may now hold a partial tail; only a reopen may recover it.
            self.poisoned = true;
        }
        result?;
        self.entries_len += entry_bytes.len() as u64;
        self.frontier = frontier;
        Ok(first..self.size())
    }

    fn write_batch(
        &self,
        first: u64,
        entry_bytes: &[u8],
        index_bytes: &[u8],
        nodes: &[u8],
    ) -> Result<(), AuditError> {
        // Entries first: the index and tree must never get ahead of durable entries.
        write_durably(
            &self.entries,
            &self.paths.entries,
            self.entries_len,
            entry_bytes,
        )?;
        write_durably(&self.index, &self.paths.index, first * 8, index_bytes)?;
        write_durably(
            &self.tree,
            &self.paths.tree,
            stored_nodes(first) * 32,
            nodes,
        )
    }

    /// Signs a checkpoint of the current tree and stores it.
    ///
    /// Before signing, checks with a consistency proof built from the stored tree that the
    /// current tree extends the latest signed checkpoint; a log never signs a fork of itself.
    /// If the latest checkpoint already covers the current size it is returned as is.
    pub fn checkpoint(&mut self) -> Result<Checkpoint, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let size = self.size();
        let root = self.frontier.root();
        // The stored nodes must agree with the in-memory edge, or proofs would lie.
        if merkle::root_at(&self.tree_source(), size)? != root {
            return Err(AuditError::corrupt(
                &self.paths.tree,
                0,
                "the stored tree does not match the entries appended by this process",
            ));
        }
        if let Some(prev) = &self.latest {
            let inconsistent = AuditError::InconsistentWithCheckpoint {
                checkpoint_size: prev.size(),
                size,
            };
            match prev.size() {
                s if s > size => return Err(inconsistent),
                s if s == size => {
                    if *prev.root() == root {
                        return Ok(prev.clone());
                    }
                    return Err(inconsistent);
                }
                0 => {
                    if *prev.root() != EMPTY_ROOT {
                        return Err(inconsistent);
                    }
                }
                s => {
                    let proof = self.consistency_proof(s, size)?;
                    if merkle::verify_consistency(s, size, &proof, prev.root(), &root).is_err() {
                        return Err(inconsistent);
                    }
                }
            }
        }
        let checkpoint = self.signer.sign(size, &root);
        let mut framed = Vec::new();
        encode_record(
            self.checkpoint_count,
            checkpoint.text().as_bytes(),
            &mut framed,
        );
        if let Err(e) = write_durably(
            &self.checkpoints,
            &self.paths.checkpoints,
            self.checkpoints_len,
            &framed,
        ) {
            self.poisoned = true;
            return Err(e);
        }
        self.checkpoints_len += framed.len() as u64;
        self.checkpoint_count += 1;
        self.latest = Some(checkpoint.clone());
        Ok(checkpoint)
    }

    /// Inclusion proof of entry `index` in the tree of the first `tree_size` entries,
    /// from stored hashes in `O(log n)` reads.
    pub fn inclusion_proof(&self, index: u64, tree_size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_tree_size(tree_size)?;
        merkle::inclusion_proof(&self.tree_source(), index, tree_size)
    }

    /// Consistency proof between the trees of the first `old` and first `new` entries
    /// (`0 < old <= new <= size`), from stored hashes in `O(log n)` reads.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_tree_size(new)?;
        merkle::consistency_proof(&self.tree_source(), old, new)
    }

    /// Root hash of the tree of the first `tree_size` entries, from stored hashes.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, AuditError> {
        self.check_tree_size(tree_size)?;
        merkle::root_at(&self.tree_source(), tree_size)
    }

    /// The stored bytes of entry `index` (its canonical JSON).
    pub fn read_entry(&self, index: u64) -> Result<Vec<u8>, AuditError> {
        let size = self.size();
        if index >= size {
            return Err(AuditError::IndexOutOfRange { index, size });
        }
        let start = if index == 0 {
            0
        } else {
            read_u64_at(&self.index, &self.paths.index, index - 1)?
        };
        let end = read_u64_at(&self.index, &self.paths.index, index)?;
        read_record_at(&self.entries, &self.paths.entries, start, end, index)
    }

    /// Entry `index`, decoded.
    pub fn record(&self, index: u64) -> Result<AuditRecord, AuditError> {
        AuditRecord::from_json(&self.read_entry(index)?)
    }

    /// The stored leaf hash of entry `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, AuditError> {
        let size = self.size();
        if index >= size {
            return Err(AuditError::IndexOutOfRange { index, size });
        }
        self.tree_source().node(0, index)
    }

    /// A self-contained proof that entry `index` is in the log, against the latest signed
    /// checkpoint (which must cover the entry).
    pub fn inclusion_bundle(&self, index: u64) -> Result<InclusionBundle, AuditError> {
        let checkpoint = match &self.latest {
            Some(c) if c.size() > index => c,
            other => {
                return Err(AuditError::NoCheckpoint {
                    index,
                    checkpoint_size: other.as_ref().map_or(0, Checkpoint::size),
                });
            }
        };
        let entry = self.read_entry(index)?;
        let leaf = leaf_hash(&entry);
        if leaf != self.leaf_hash(index)? {
            return Err(AuditError::corrupt(
                &self.paths.entries,
                0,
                format!("entry {index} does not match its stored leaf hash"),
            ));
        }
        let proof = self.inclusion_proof(index, checkpoint.size())?;
        Ok(InclusionBundle::new(index, entry, leaf, checkpoint, proof))
    }

    fn check_tree_size(&self, tree_size: u64) -> Result<(), AuditError> {
        if tree_size > self.size() {
            return Err(AuditError::InvalidProofRequest {
                what: format!("tree size {tree_size} is larger than the log"),
                size: self.size(),
            });
        }
        Ok(())
    }

    fn tree_source(&self) -> TreeFile<'_> {
        TreeFile {
            file: &self.tree,
            path: &self.paths.tree,
            nodes: stored_nodes(self.size()),
        }
    }

    /// Brings the files to a consistent state after open. Plans first, checks the plan
    /// against the latest signed checkpoint, and only then changes any file.
    fn recover(&mut self) -> Result<(), AuditError> {
        let p = self.paths.clone();
        let entries_len = file_len(&self.entries, &p.entries)?;
        let index_len = file_len(&self.index, &p.index)?;
        let tree_len = file_len(&self.tree, &p.tree)?;

        // Entries acknowledged by a completed append: present in both derived files.
        let known = (index_len / 8).min(leaves_for_nodes(tree_len / 32));
        let acked_end = if known == 0 {
            0
        } else {
            read_u64_at(&self.index, &p.index, known - 1)?
        };
        if acked_end > entries_len {
            return Err(AuditError::corrupt(
                &p.entries,
                entries_len,
                format!(
                    "the file ends before entry {}, which the index records as written: acknowledged entries were removed",
                    known - 1
                ),
            ));
        }
        let tree = TreeFile {
            file: &self.tree,
            path: &p.tree,
            nodes: stored_nodes(known),
        };
        if known > 0 {
            // The last acknowledged entry must sit where the index says, with its leaf hash.
            let start = if known == 1 {
                0
            } else {
                read_u64_at(&self.index, &p.index, known - 2)?
            };
            let payload = read_record_at(&self.entries, &p.entries, start, acked_end, known - 1)?;
            if leaf_hash(&payload) != tree.node(0, known - 1)? {
                return Err(AuditError::corrupt(
                    &p.tree,
                    merkle::postorder_position(0, known - 1) * 32,
                    format!(
                        "the stored leaf hash of entry {} does not match the entry",
                        known - 1
                    ),
                ));
            }
        }
        let mut frontier = Frontier::load(&tree, known)?;

        // Whole records past the index were written by an append that did not finish
        // indexing them: keep them. Anything after the first broken record is a torn tail.
        // This pass only counts; the records are re-read below once the plan is checked.
        let mut tail = 0u64;
        let whole_end = self.scan_tail(acked_end, known, |_| {
            tail += 1;
            Ok(())
        })?;
        let size = known + tail;

        let (checkpoint_count, checkpoints_end, latest) = self.load_checkpoints()?;
        if let Some(cp) = &latest
            && cp.size() > size
        {
            return Err(AuditError::CheckpointBeyondLog {
                checkpoint_size: cp.size(),
                entries: size,
            });
        }

        // The plan is safe: apply it.
        if whole_end < entries_len {
            tracing::warn!(
                log = %p.dir.display(),
                bytes = entries_len - whole_end,
                entry = size,
                "audit log: removing a torn tail left by an interrupted append"
            );
            truncate(&self.entries, &p.entries, whole_end)?;
        }
        if index_len != known * 8 {
            truncate(&self.index, &p.index, known * 8)?;
        }
        if tree_len != stored_nodes(known) * 32 {
            truncate(&self.tree, &p.tree, stored_nodes(known) * 32)?;
        }
        if tail > 0 {
            tracing::warn!(
                log = %p.dir.display(),
                entries = tail,
                "audit log: indexing entries written by an interrupted append"
            );
            // Rebuild in chunks so that a large rebuild (deleted derived files) stays small
            // in memory.
            let mut chunk = Vec::new();
            let mut indexed = known;
            let mut chunk_offset = acked_end;
            let mut flush = |chunk: &mut Vec<Vec<u8>>, frontier: &mut Frontier| {
                let (entry_bytes, index_bytes, nodes) =
                    encode_batch(indexed, chunk_offset, chunk, frontier);
                write_at(&self.index, &p.index, indexed * 8, &index_bytes)?;
                write_at(&self.tree, &p.tree, stored_nodes(indexed) * 32, &nodes)?;
                indexed += chunk.len() as u64;
                chunk_offset += entry_bytes.len() as u64;
                chunk.clear();
                Ok::<(), AuditError>(())
            };
            self.scan_tail(acked_end, known, |payload| {
                chunk.push(payload);
                if chunk.len() == REBUILD_CHUNK {
                    flush(&mut chunk, &mut frontier)?;
                }
                Ok(())
            })?;
            if !chunk.is_empty() {
                flush(&mut chunk, &mut frontier)?;
            }
            sync(&self.index, &p.index)?;
            sync(&self.tree, &p.tree)?;
        }
        if checkpoints_end < file_len(&self.checkpoints, &p.checkpoints)? {
            tracing::warn!(
                log = %p.dir.display(),
                "audit log: removing a torn checkpoint left by an interrupted signing"
            );
            truncate(&self.checkpoints, &p.checkpoints, checkpoints_end)?;
        }
        self.entries_len = whole_end;
        self.frontier = frontier;
        self.checkpoint_count = checkpoint_count;
        self.checkpoints_len = checkpoints_end;

        if let Some(cp) = &latest
            && merkle::root_at(&self.tree_source(), cp.size())? != *cp.root()
        {
            return Err(AuditError::corrupt(
                &p.tree,
                0,
                format!(
                    "the tree of the first {} entries no longer has the root the latest checkpoint signed",
                    cp.size()
                ),
            ));
        }
        self.latest = latest;
        Ok(())
    }

    /// Calls `each` with the payload of every whole, correctly numbered record from byte
    /// `start` (whose first record is entry `first`) and returns the end of the last one.
    fn scan_tail(
        &self,
        start: u64,
        first: u64,
        mut each: impl FnMut(Vec<u8>) -> Result<(), AuditError>,
    ) -> Result<u64, AuditError> {
        let path = &self.paths.entries;
        let mut scanner =
            Scanner::open_at(&self.entries, start).map_err(|e| AuditError::io("read", path, e))?;
        let mut expected = first;
        loop {
            let next = scanner
                .next_record()
                .map_err(|e| AuditError::io("read", path, e))?;
            match next {
                Scan::Record { index, payload } if index == expected => {
                    each(payload)?;
                    expected += 1;
                }
                // The record just read (if any) is not whole: the tail starts before it.
                Scan::Record { payload, .. } | Scan::BadChecksum { payload, .. } => {
                    return Ok(scanner.offset() - framed_len(payload.len()));
                }
                Scan::End | Scan::Torn | Scan::BadLength => return Ok(scanner.offset()),
            }
        }
    }

    /// Reads the checkpoints file: (count, end of the last whole record, latest checkpoint).
    fn load_checkpoints(&self) -> Result<(u64, u64, Option<Checkpoint>), AuditError> {
        let p = &self.paths;
        let len = file_len(&self.checkpoints, &p.checkpoints)?;
        let mut scanner = Scanner::open_at(&self.checkpoints, 0)
            .map_err(|e| AuditError::io("read", &p.checkpoints, e))?;
        let mut count = 0u64;
        let mut last: Option<(u64, Vec<u8>)> = None;
        loop {
            let start = scanner.offset();
            let next = scanner
                .next_record()
                .map_err(|e| AuditError::io("read", &p.checkpoints, e))?;
            match next {
                Scan::Record { index, payload } if index == count => {
                    last = Some((start, payload));
                    count += 1;
                }
                Scan::End | Scan::Torn => break,
                // A damaged final record is a torn signing; damage before the end is not.
                Scan::BadChecksum { .. } if scanner.offset() == len => break,
                Scan::BadLength if self.zeros_from(start, len)? => break,
                _ => {
                    return Err(AuditError::corrupt(
                        &p.checkpoints,
                        start,
                        format!("checkpoint record {count} is damaged"),
                    ));
                }
            }
        }
        let end = scanner.offset();
        let latest = match last {
            None => None,
            Some((offset, payload)) => {
                let text = String::from_utf8(payload).map_err(|_| {
                    AuditError::corrupt(
                        &p.checkpoints,
                        offset,
                        "the latest checkpoint is not UTF-8",
                    )
                })?;
                let cp =
                    Checkpoint::parse_and_verify(&text, self.signer.public_key()).map_err(|e| {
                        AuditError::corrupt(
                            &p.checkpoints,
                            offset,
                            format!("the latest checkpoint does not verify ({e})"),
                        )
                    })?;
                Some(cp)
            }
        };
        Ok((count, end, latest))
    }
}

impl AuditLog {
    /// Whether the checkpoints file holds only zero bytes from `start` to `len`: some file
    /// systems leave a zero-filled tail when a crash interrupts an append.
    fn zeros_from(&self, start: u64, len: u64) -> Result<bool, AuditError> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; (len - start).min(1 << 20) as usize];
        if len - start > buf.len() as u64 {
            return Ok(false);
        }
        self.checkpoints
            .read_exact_at(&mut buf, start)
            .map_err(|e| AuditError::io("read", &self.paths.checkpoints, e))?;
        Ok(buf.iter().all(|b| *b == 0))
    }
}

/// Frames a batch: entry records, index slots and tree nodes (post-order), advancing
/// `frontier`.
fn encode_batch(
    first: u64,
    entries_offset: u64,
    payloads: &[Vec<u8>],
    frontier: &mut Frontier,
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut entry_bytes = Vec::with_capacity(payloads.iter().map(|p| p.len() + 48).sum());
    let mut index_bytes = Vec::with_capacity(payloads.len() * 8);
    let mut nodes = Vec::with_capacity(payloads.len() * 2);
    for (i, payload) in payloads.iter().enumerate() {
        encode_record(first + i as u64, payload, &mut entry_bytes);
        let end = entries_offset + entry_bytes.len() as u64;
        index_bytes.extend_from_slice(&end.to_be_bytes());
        frontier.push(leaf_hash(payload), &mut nodes);
    }
    (entry_bytes, index_bytes, nodes.concat())
}

fn check_or_create_meta(paths: &Paths, key: &LogPublicKey) -> Result<(), AuditError> {
    if let Some(meta) = storage::read_meta(&paths.meta)? {
        if meta.verifier_key != key.to_vkey() || meta.origin != key.name() {
            return Err(AuditError::KeyMismatch {
                expected: meta.verifier_key,
                found: key.to_vkey(),
            });
        }
        return Ok(());
    }
    // No metadata: only a brand-new directory may be initialised.
    if fs::metadata(&paths.entries).is_ok_and(|m| m.len() > 0) {
        return Err(AuditError::corrupt(
            &paths.meta,
            0,
            "the metadata file is missing although the log holds entries",
        ));
    }
    let meta = Meta {
        format: FORMAT.to_owned(),
        origin: key.name().to_owned(),
        verifier_key: key.to_vkey(),
    };
    let mut bytes =
        serde_json::to_vec_pretty(&meta).map_err(|e| AuditError::encoding("encoded", &e))?;
    bytes.push(b'\n');
    let tmp: PathBuf = paths.dir.join(format!("{}.tmp", storage::META_FILE));
    let f = open_rw(&tmp)?;
    f.set_len(0)
        .map_err(|e| AuditError::io("truncate", &tmp, e))?;
    write_durably(&f, &tmp, 0, &bytes)?;
    fs::rename(&tmp, &paths.meta).map_err(|e| AuditError::io("rename", &tmp, e))?;
    sync_dir(&paths.dir)
}
