//! Read-only verification of a whole log directory.

use std::fmt;
use std::io::{BufReader, Read};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;

use crate::bundle::b64;
use crate::checkpoint::{Checkpoint, LogPublicKey};
use crate::error::AuditError;
use crate::event::AuditRecord;
use crate::merkle::{
    self, EMPTY_ROOT, Frontier, Hash, leaf_hash, leaves_for_nodes, verify_consistency,
};
use crate::storage::{Paths, Scan, Scanner, TreeFile, file_len, open_ro, read_meta};

/// What is wrong with an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryProblem {
    /// The record's framing (length or checksum) is broken: the bytes were changed.
    RecordDamaged {
        /// Byte offset of the record in `entries.bin`.
        offset: u64,
        /// What is broken.
        what: String,
    },
    /// The record in this position carries another index: entries were dropped,
    /// reordered or inserted here.
    WrongPosition {
        /// The index the record carries.
        recorded_index: u64,
    },
    /// The bytes do not decode as an audit record.
    NotAnAuditRecord,
    /// The entry differs from the leaf hash recorded when it was appended.
    LeafHashMismatch,
    /// The log ends here but a signed checkpoint or the tree file covers more entries.
    Missing {
        /// How many entries the checkpoints or the tree file say exist.
        expected_entries: u64,
    },
    /// A signed checkpoint's root does not match the entries: some entry in
    /// `[index, checkpoint_size)` was changed (the derived files were rewritten too, so the
    /// change cannot be narrowed down further).
    RootMismatch {
        /// Size of the checkpoint that does not match.
        checkpoint_size: u64,
    },
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RecordDamaged { offset, what } => {
                write!(f, "the record at byte {offset} is damaged ({what})")
            }
            Self::WrongPosition { recorded_index } => write!(
                f,
                "the record here is entry {recorded_index}: entries were dropped, reordered or inserted"
            ),
            Self::NotAnAuditRecord => f.write_str("the entry is not a valid audit record"),
            Self::LeafHashMismatch => f.write_str(
                "the entry differs from the leaf hash recorded when it was appended: it was modified or replaced",
            ),
            Self::Missing { expected_entries } => write!(
                f,
                "the log ends here but {expected_entries} entries were recorded: the log was truncated"
            ),
            Self::RootMismatch { checkpoint_size } => write!(
                f,
                "the signed checkpoint of size {checkpoint_size} does not match the entries: an entry from here on was changed"
            ),
        }
    }
}

/// The first bad entry of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEntry {
    /// Its index (0-based).
    pub index: u64,
    /// What is wrong.
    pub problem: EntryProblem,
}

/// A finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// An entry is bad (the first [`MAX_LISTED_ENTRIES`] found while scanning, plus any
    /// missing-entry or root findings; the first is also in `first_bad_entry`).
    Entry(BadEntry),
    /// `log.json` is missing.
    MetadataMissing,
    /// `log.json` is not the metadata of a log of this format.
    MetadataDamaged,
    /// `log.json` names another verifier key than the one verification uses.
    MetadataKeyMismatch {
        /// The key recorded in the log.
        recorded: String,
    },
    /// The checkpoints file is damaged; checkpoints from here on were not read.
    CheckpointFileDamaged {
        /// Byte offset.
        offset: u64,
    },
    /// A checkpoint does not parse or its signature does not verify.
    CheckpointInvalid {
        /// Its position in the checkpoints file (0-based).
        position: u64,
        /// Why.
        what: String,
    },
    /// A checkpoint's root does not match the entries.
    CheckpointRootMismatch {
        /// Position.
        position: u64,
        /// Its size.
        size: u64,
    },
    /// A checkpoint covers more entries than the log holds.
    CheckpointBeyondLog {
        /// Position.
        position: u64,
        /// Its size.
        size: u64,
    },
    /// Two consecutive checkpoints are not consistent (the log was forked or rewritten).
    CheckpointsInconsistent {
        /// Position of the earlier one.
        earlier: u64,
        /// Position of the later one.
        later: u64,
    },
    /// The derived tree file disagrees with entries that signed checkpoints confirm.
    TreeFileDamaged {
        /// First entry whose stored hashes are wrong.
        entry: u64,
    },
    /// The derived index file disagrees with the entries file.
    IndexFileDamaged {
        /// First entry whose offset is wrong.
        entry: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Entry(b) => write!(f, "entry {}: {}", b.index, b.problem),
            Self::MetadataMissing => f.write_str("log.json is missing"),
            Self::MetadataDamaged => f.write_str("log.json is damaged or of another format"),
            Self::MetadataKeyMismatch { recorded } => write!(
                f,
                "log.json records verifier key {recorded}, not the key used to verify"
            ),
            Self::CheckpointFileDamaged { offset } => write!(
                f,
                "checkpoints.bin is damaged at byte {offset}; later checkpoints were not read"
            ),
            Self::CheckpointInvalid { position, what } => {
                write!(f, "checkpoint {position} is invalid: {what}")
            }
            Self::CheckpointRootMismatch { position, size } => write!(
                f,
                "checkpoint {position} (size {size}) does not match the entries"
            ),
            Self::CheckpointBeyondLog { position, size } => write!(
                f,
                "checkpoint {position} covers {size} entries, more than the log holds"
            ),
            Self::CheckpointsInconsistent { earlier, later } => write!(
                f,
                "checkpoints {earlier} and {later} are not consistent: the log was forked or rewritten"
            ),
            Self::TreeFileDamaged { entry } => write!(
                f,
                "tree.bin is damaged from entry {entry} (the entries are confirmed by a signed checkpoint); delete tree.bin and entries.idx and reopen the log to rebuild them"
            ),
            Self::IndexFileDamaged { entry } => write!(
                f,
                "entries.idx is damaged from entry {entry}; delete tree.bin and entries.idx and reopen the log to rebuild them"
            ),
        }
    }
}

/// The result of verifying a log directory.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The log origin (the verifier key's name).
    pub origin: String,
    /// Whole entries read.
    pub entries: u64,
    /// Root hash recomputed over those entries.
    #[serde(with = "b64")]
    pub root: Hash,
    /// Checkpoints whose signature verified.
    pub valid_checkpoints: u64,
    /// Size of the last valid checkpoint.
    pub latest_checkpoint_size: Option<u64>,
    /// The first bad entry, if any.
    pub first_bad_entry: Option<BadEntry>,
    /// Every finding.
    pub problems: Vec<Problem>,
    /// Bytes of an incomplete record at the end of the entries file, left by a crash
    /// (not an error unless a checkpoint covers it; opening the log removes it).
    pub torn_tail_bytes: u64,
    /// Whole entries written by an append that crashed before indexing them (not an error;
    /// opening the log indexes them).
    pub unindexed_entries: u64,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.first_bad_entry.is_none() && self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        writeln!(f, "audit log {}: {verdict}", self.origin)?;
        writeln!(f, "entries:     {}", self.entries)?;
        writeln!(f, "root:        {}", B64.encode(self.root))?;
        match self.latest_checkpoint_size {
            Some(s) => writeln!(
                f,
                "checkpoints: {} valid, latest covers {s} entries",
                self.valid_checkpoints
            )?,
            None => writeln!(f, "checkpoints: none")?,
        }
        if let Some(bad) = &self.first_bad_entry {
            writeln!(f, "first bad entry: {}: {}", bad.index, bad.problem)?;
        }
        if self.torn_tail_bytes > 0 {
            writeln!(
                f,
                "note: {} bytes of an interrupted append at the end (opening the log removes them)",
                self.torn_tail_bytes
            )?;
        }
        if self.unindexed_entries > 0 {
            writeln!(
                f,
                "note: {} entries not yet indexed (opening the log indexes them)",
                self.unindexed_entries
            )?;
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        Ok(())
    }
}

/// Per-entry findings listed from the scan; one dropped entry shifts every later one, so
/// the list is capped.
pub const MAX_LISTED_ENTRIES: usize = 20;

struct CheckpointState {
    position: u64,
    checkpoint: Checkpoint,
    /// Root matches the entries: `None` until the scan reaches its size.
    matched: Option<bool>,
}

/// Verifies a log directory without changing it.
///
/// Recomputes the tree from the entries, checks every checkpoint's signature under `key`,
/// that each checkpoint's root matches the entries, that consecutive checkpoints are
/// consistent, and that the derived files agree with the entries. Reports the first bad
/// entry and every problem found. `Err` means the directory could not be read at all.
pub fn verify(dir: impl AsRef<Path>, key: &LogPublicKey) -> Result<VerifyReport, AuditError> {
    let paths = Paths::new(dir.as_ref());
    let mut problems = Vec::new();
    let mut bad: Vec<BadEntry> = Vec::new();

    let meta = match read_meta(&paths.meta) {
        Ok(m) => m,
        Err(AuditError::Corrupt { .. }) => {
            problems.push(Problem::MetadataDamaged);
            None
        }
        Err(e) => return Err(e),
    };
    match meta {
        Some(meta) => {
            if meta.verifier_key != key.to_vkey() {
                problems.push(Problem::MetadataKeyMismatch {
                    recorded: meta.verifier_key,
                });
            }
        }
        None if problems.contains(&Problem::MetadataDamaged) => {}
        None => {
            if !paths.entries.exists() {
                return Err(AuditError::io(
                    "find an audit log in",
                    &paths.dir,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no log.json or entries.bin"),
                ));
            }
            problems.push(Problem::MetadataMissing);
        }
    }

    let mut cps = read_checkpoints(&paths, key, &mut problems)?;
    // Process checkpoints in size order while scanning.
    let mut by_size: Vec<usize> = (0..cps.len()).collect();
    by_size.sort_by_key(|&i| cps[i].checkpoint.size());
    let mut next_cp = 0usize;
    while let Some(&ci) = by_size.get(next_cp) {
        if cps[ci].checkpoint.size() != 0 {
            break;
        }
        cps[ci].matched = Some(*cps[ci].checkpoint.root() == EMPTY_ROOT);
        next_cp += 1;
    }

    let entries = open_ro(&paths.entries)?;
    let entries_len = match &entries {
        Some(f) => file_len(f, &paths.entries)?,
        None => 0,
    };
    let tree = open_ro(&paths.tree)?;
    let tree_nodes = match &tree {
        Some(f) => file_len(f, &paths.tree)? / 32,
        None => 0,
    };
    let tree_leaves = leaves_for_nodes(tree_nodes);
    let index = open_ro(&paths.index)?;
    let index_count = match &index {
        Some(f) => file_len(f, &paths.index)? / 8,
        None => 0,
    };
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e| AuditError::io("read", path, e)
    };
    let mut tree_reader = match &tree {
        Some(f) => Some(BufReader::with_capacity(
            1 << 16,
            f.try_clone().map_err(io(&paths.tree))?,
        )),
        None => None,
    };
    let mut index_reader = match &index {
        Some(f) => Some(BufReader::with_capacity(
            1 << 16,
            f.try_clone().map_err(io(&paths.index))?,
        )),
        None => None,
    };

    let mut frontier = Frontier::default();
    let mut emitted = Vec::with_capacity(64);
    let mut first_leaf_mismatch: Option<u64> = None;
    let mut tree_damage: Option<u64> = None;
    let mut index_damage: Option<u64> = None;
    let mut torn_tail_bytes = 0;
    let mut i = 0u64;
    let note = |bad: &mut Vec<BadEntry>, index: u64, problem: EntryProblem| {
        if bad.len() < MAX_LISTED_ENTRIES {
            bad.push(BadEntry { index, problem });
        }
    };
    if let Some(file) = &entries {
        let mut scanner = Scanner::open_at(file, 0).map_err(io(&paths.entries))?;
        loop {
            let offset = scanner.offset();
            let (recorded, payload) = match scanner.next_record().map_err(io(&paths.entries))? {
                Scan::Record { index, payload } => (index, payload),
                // A damaged last record that was never indexed is a torn write, which
                // opening the log removes (a checkpoint covering it is caught below).
                Scan::BadChecksum { .. } if scanner.offset() == entries_len && i >= tree_leaves => {
                    torn_tail_bytes = entries_len - offset;
                    break;
                }
                Scan::BadChecksum { index, payload } => {
                    let what = "its checksum does not match its bytes".into();
                    note(&mut bad, i, EntryProblem::RecordDamaged { offset, what });
                    (index, payload)
                }
                Scan::End => break,
                Scan::Torn => {
                    torn_tail_bytes = entries_len - offset;
                    break;
                }
                Scan::BadLength => {
                    let what =
                        "its length field is impossible; the rest of the file cannot be read"
                            .into();
                    note(&mut bad, i, EntryProblem::RecordDamaged { offset, what });
                    break;
                }
            };
            if recorded != i {
                let problem = EntryProblem::WrongPosition {
                    recorded_index: recorded,
                };
                note(&mut bad, i, problem);
            }
            if AuditRecord::from_json(&payload).is_err() {
                note(&mut bad, i, EntryProblem::NotAnAuditRecord);
            }
            emitted.clear();
            frontier.push(leaf_hash(&payload), &mut emitted);
            // Compare with the nodes stored when the entry was appended.
            if i < tree_leaves
                && let Some(r) = tree_reader.as_mut()
            {
                for (k, node) in emitted.iter().enumerate() {
                    let mut stored = [0u8; 32];
                    r.read_exact(&mut stored).map_err(io(&paths.tree))?;
                    if stored != *node {
                        if k == 0 {
                            first_leaf_mismatch.get_or_insert(i);
                        } else if first_leaf_mismatch.is_none() {
                            tree_damage.get_or_insert(i);
                        }
                    }
                }
            }
            if i < index_count
                && let Some(r) = index_reader.as_mut()
            {
                let mut b = [0u8; 8];
                r.read_exact(&mut b).map_err(io(&paths.index))?;
                if u64::from_be_bytes(b) != scanner.offset() {
                    index_damage.get_or_insert(i);
                }
            }
            i += 1;
            while let Some(&ci) = by_size.get(next_cp) {
                if cps[ci].checkpoint.size() != i {
                    break;
                }
                cps[ci].matched = Some(frontier.root() == *cps[ci].checkpoint.root());
                next_cp += 1;
            }
        }
    }
    let n = i;

    // Entries the checkpoints or the tree file say exist but the log does not hold.
    let mut expected = tree_leaves;
    for c in &cps {
        if c.checkpoint.size() > n {
            problems.push(Problem::CheckpointBeyondLog {
                position: c.position,
                size: c.checkpoint.size(),
            });
            expected = expected.max(c.checkpoint.size());
        }
    }
    if expected > n {
        bad.push(BadEntry {
            index: n,
            problem: EntryProblem::Missing {
                expected_entries: expected,
            },
        });
    }

    // A leaf mismatch inside a range a matching signed checkpoint confirms is the tree
    // file's fault, not the entry's.
    let confirmed = cps
        .iter()
        .filter(|c| c.matched == Some(true))
        .map(|c| c.checkpoint.size())
        .max()
        .unwrap_or(0);
    if let Some(j) = first_leaf_mismatch {
        if j < confirmed {
            tree_damage = Some(tree_damage.map_or(j, |t| t.min(j)));
        } else {
            bad.push(BadEntry {
                index: j,
                problem: EntryProblem::LeafHashMismatch,
            });
        }
    }
    if let Some(entry) = tree_damage {
        problems.push(Problem::TreeFileDamaged { entry });
    }
    if let Some(entry) = index_damage {
        problems.push(Problem::IndexFileDamaged { entry });
    }

    let mut root_mismatch_noted = false;
    for &ci in &by_size {
        let c = &cps[ci];
        if c.matched == Some(false) {
            problems.push(Problem::CheckpointRootMismatch {
                position: c.position,
                size: c.checkpoint.size(),
            });
            // A finding inside the checkpoint's range already explains the mismatch.
            if root_mismatch_noted || bad.iter().any(|b| b.index < c.checkpoint.size()) {
                continue;
            }
            root_mismatch_noted = true;
            // The change lies after the largest smaller checkpoint that still matches.
            let lower = cps
                .iter()
                .filter(|o| o.matched == Some(true) && o.checkpoint.size() < c.checkpoint.size())
                .map(|o| o.checkpoint.size())
                .max()
                .unwrap_or(0);
            bad.push(BadEntry {
                index: lower,
                problem: EntryProblem::RootMismatch {
                    checkpoint_size: c.checkpoint.size(),
                },
            });
        }
    }

    // Consecutive checkpoints must be consistent. When both match the entries they are;
    // otherwise ask the stored tree for a proof.
    let tree_src = tree.as_ref().map(|file| TreeFile {
        file,
        path: &paths.tree,
        nodes: tree_nodes,
    });
    for pair in cps.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (sa, sb) = (a.checkpoint.size(), b.checkpoint.size());
        let consistent = if sb < sa {
            false
        } else if sa == sb {
            a.checkpoint.root() == b.checkpoint.root()
        } else if sa == 0 || (a.matched == Some(true) && b.matched == Some(true)) {
            true
        } else {
            match &tree_src {
                Some(src) if sb <= tree_leaves => merkle::consistency_proof(src, sa, sb)
                    .ok()
                    .is_some_and(|proof| {
                        verify_consistency(sa, sb, &proof, a.checkpoint.root(), b.checkpoint.root())
                            .is_ok()
                    }),
                // Nothing to build a proof from; the root mismatch is reported already.
                _ => true,
            }
        };
        if !consistent {
            problems.push(Problem::CheckpointsInconsistent {
                earlier: a.position,
                later: b.position,
            });
        }
    }

    bad.sort_by_key(|b| b.index);
    let first_bad_entry = bad.first().cloned();
    // Report every bad entry, in index order, ahead of the other problems.
    let mut all = bad.into_iter().map(Problem::Entry).collect::<Vec<_>>();
    all.append(&mut problems);

    Ok(VerifyReport {
        origin: key.name().to_owned(),
        entries: n,
        root: frontier.root(),
        valid_checkpoints: cps.len() as u64,
        latest_checkpoint_size: cps.last().map(|c| c.checkpoint.size()),
        first_bad_entry,
        problems: all,
        torn_tail_bytes,
        unindexed_entries: n.saturating_sub(tree_leaves),
    })
}

fn read_checkpoints(
    paths: &Paths,
    key: &LogPublicKey,
    problems: &mut Vec<Problem>,
) -> Result<Vec<CheckpointState>, AuditError> {
    let Some(file) = open_ro(&paths.checkpoints)? else {
        return Ok(Vec::new());
    };
    let read = |e| AuditError::io("read", &paths.checkpoints, e);
    let len = file_len(&file, &paths.checkpoints)?;
    let mut scanner = Scanner::open_at(&file, 0).map_err(read)?;
    let mut out = Vec::new();
    let mut position = 0u64;
    loop {
        let offset = scanner.offset();
        match scanner.next_record().map_err(read)? {
            Scan::Record { index, payload } if index == position => {
                let parsed = String::from_utf8(payload)
                    .map_err(|_| AuditError::MalformedCheckpoint {
                        what: "it is not UTF-8".into(),
                    })
                    .and_then(|text| Checkpoint::parse_and_verify(&text, key));
                match parsed {
                    Ok(checkpoint) => out.push(CheckpointState {
                        position,
                        checkpoint,
                        matched: None,
                    }),
                    Err(e) => problems.push(Problem::CheckpointInvalid {
                        position,
                        what: e.to_string(),
                    }),
                }
                position += 1;
            }
            Scan::End => break,
            // An incomplete or damaged final record is an interrupted signing, which opening
            // the log removes; it was never handed out.
            Scan::Torn => break,
            Scan::BadChecksum { .. } if scanner.offset() == len => break,
            _ => {
                problems.push(Problem::CheckpointFileDamaged { offset });
                break;
            }
        }
    }
    Ok(out)
}
