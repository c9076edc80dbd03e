#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The log end to end: appends, checkpoints, proofs, bundles, tamper detection by
//! `verify`, and recovery from torn writes.

mod common;

use std::fs;
use std::path::Path;

use blindwatch_audit::{
    AuditError, AuditLog, Checkpoint, EntryProblem, InclusionBundle, LogPublicKey, Problem,
    VerifyReport, leaf_hash, verify, verify_consistency, verify_inclusion, verify_inclusion_bundle,
};
use common::*;
use rand::{Rng, SeedableRng};

/// A log with `n` entries and checkpoints after entries 5, 10 and `n`.
fn build(dir: &Path, pkcs8: &[u8], n: u64) -> LogPublicKey {
    let mut log = AuditLog::open(dir, signer(pkcs8)).unwrap();
    for i in 0..n {
        assert_eq!(log.append(&record(i)).unwrap(), i);
        if i + 1 == 5 || i + 1 == 10 {
            log.checkpoint().unwrap();
        }
    }
    log.checkpoint().unwrap();
    log.public_key().clone()
}

fn first_bad(report: &VerifyReport) -> (u64, EntryProblem) {
    let bad = report
        .first_bad_entry
        .clone()
        .unwrap_or_else(|| panic!("verify found nothing:\n{report}"));
    (bad.index, bad.problem)
}

fn rewrite_entries(dir: &Path, f: impl FnOnce(&mut Vec<(u64, Vec<u8>)>)) {
    let path = entries_path(dir);
    let mut records = unframe(&fs::read(&path).unwrap());
    f(&mut records);
    fs::write(&path, reframe(&records)).unwrap();
}

#[test]
fn append_checkpoint_prove_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!(log.size(), 0);
    // A checkpoint of the empty log is allowed and later extended.
    let empty = log.checkpoint().unwrap();
    assert_eq!(empty.size(), 0);

    let range = log
        .append_batch(&(0..37).map(record).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(range, 0..37);
    let cp37 = log.checkpoint().unwrap();
    // Signing again at the same size returns the same checkpoint, not a new one.
    assert_eq!(log.checkpoint().unwrap(), cp37);
    for i in 37..64 {
        log.append(&record(i)).unwrap();
    }
    let cp64 = log.checkpoint().unwrap();
    let key = log.public_key().clone();

    for size in [1, 2, 3, 7, 8, 37, 63, 64] {
        let root = log.root_at(size).unwrap();
        for index in 0..size {
            let proof = log.inclusion_proof(index, size).unwrap();
            let leaf = leaf_hash(&log.read_entry(index).unwrap());
            assert_eq!(leaf, log.leaf_hash(index).unwrap());
            verify_inclusion(index, size, &leaf, &proof, &root).unwrap();
        }
    }
    let proof = log.consistency_proof(37, 64).unwrap();
    verify_consistency(37, 64, &proof, cp37.root(), cp64.root()).unwrap();
    assert!(log.inclusion_proof(64, 64).is_err());
    assert!(log.consistency_proof(10, 65).is_err());

    let bundle = log.inclusion_bundle(40).unwrap();
    let text = bundle.to_json().unwrap();
    let verified =
        verify_inclusion_bundle(&InclusionBundle::from_json(&text).unwrap(), &key).unwrap();
    assert_eq!(count_of(&verified.record), 40);
    assert_eq!(verified.checkpoint, cp64);
    let printed = bundle.to_string();
    assert!(printed.contains("entry index: 40") && printed.contains(ORIGIN));

    // Reopen: same size, root and latest checkpoint; appends continue.
    let root = log.root();
    drop(log);
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!((log.size(), log.root()), (64, root));
    assert_eq!(log.latest_checkpoint(), Some(&cp64));
    assert_eq!(log.append(&record(64)).unwrap(), 64);
    assert_eq!(count_of(&log.record(64).unwrap()), 64);
    log.checkpoint().unwrap();
    drop(log);

    let report = verify(dir.path(), &key).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, 65);
    assert_eq!(report.valid_checkpoints, 4);
    serde_json::to_string(&report).unwrap();
}

#[test]
fn bundles_reject_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 12);
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    let good = log.inclusion_bundle(3).unwrap();
    verify_inclusion_bundle(&good, &key).unwrap();

    let mut other_entry = good.clone();
    other_entry.entry = log.read_entry(4).unwrap();
    assert!(verify_inclusion_bundle(&other_entry, &key).is_err());
    let mut both_changed = other_entry.clone();
    both_changed.leaf_hash = leaf_hash(&both_changed.entry);
    assert!(verify_inclusion_bundle(&both_changed, &key).is_err());
    let mut wrong_size = good.clone();
    wrong_size.tree_size -= 1;
    assert!(verify_inclusion_bundle(&wrong_size, &key).is_err());
    let other_key = signer(&new_pkcs8()).public_key().clone();
    assert!(verify_inclusion_bundle(&good, &other_key).is_err());
    // No checkpoint covers an entry appended after the last one.
    drop(log);
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    log.append(&record(12)).unwrap();
    assert!(matches!(
        log.inclusion_bundle(12),
        Err(AuditError::NoCheckpoint { .. })
    ));
}

#[test]
fn one_writer_and_one_key_per_log() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), signer(&pkcs8)),
        Err(AuditError::InUse { .. })
    ));
    drop(log);
    assert!(matches!(
        AuditLog::open(dir.path(), signer(&new_pkcs8())),
        Err(AuditError::KeyMismatch { .. })
    ));
    AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
}

#[test]
fn verify_accepts_an_untouched_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    let report = verify(dir.path(), &key).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, 20);
    assert_eq!(report.latest_checkpoint_size, Some(20));
}

#[test]
fn verify_catches_a_modified_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    // A careful attacker re-frames the record so that its checksum is right.
    rewrite_entries(dir.path(), |r| {
        let text = String::from_utf8(r[7].1.clone()).unwrap();
        r[7].1 = text.replace("\"count\":7", "\"count\":8").into_bytes();
    });
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(first_bad(&report), (7, EntryProblem::LeafHashMismatch));
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CheckpointRootMismatch { size: 10, .. }))
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["first_bad_entry"]["index"], 7);
    assert_eq!(
        json["first_bad_entry"]["problem"]["kind"],
        "leaf_hash_mismatch"
    );
    assert!(report.to_string().contains("first bad entry: 7"));
    assert!(
        !report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CheckpointRootMismatch { size: 5, .. }))
    );
}

#[test]
fn verify_catches_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    let path = entries_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let records = unframe(&bytes);
    let offset: usize = records[..11].iter().map(|(_, p)| 12 + p.len() + 32).sum();
    bytes[offset + 20] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    let (index, problem) = first_bad(&report);
    assert_eq!(index, 11);
    assert!(matches!(problem, EntryProblem::RecordDamaged { offset: o, .. } if o == offset as u64));
}

#[test]
fn verify_catches_a_dropped_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| {
        r.remove(7);
    });
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(
        first_bad(&report),
        (7, EntryProblem::WrongPosition { recorded_index: 8 })
    );
}

#[test]
fn verify_catches_a_renumbered_drop() {
    // The attacker also renumbers the later records: the stored leaf hashes catch it.
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| {
        r.remove(7);
        for (i, rec) in r.iter_mut().enumerate() {
            rec.0 = i as u64;
        }
    });
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(first_bad(&report), (7, EntryProblem::LeafHashMismatch));
}

#[test]
fn verify_catches_reordered_entries() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| r.swap(12, 13));
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(
        first_bad(&report),
        (12, EntryProblem::WrongPosition { recorded_index: 13 })
    );
}

#[test]
fn verify_catches_an_inserted_entry() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| {
        let forged = record(999).to_canonical_json().unwrap();
        r.insert(3, (3, forged));
    });
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(first_bad(&report), (3, EntryProblem::LeafHashMismatch));
    assert!(report.problems.iter().any(|p| matches!(
        p,
        Problem::Entry(b) if b.index == 4 && b.problem == EntryProblem::WrongPosition { recorded_index: 3 }
    )));
}

#[test]
fn verify_catches_a_truncated_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| r.truncate(12));
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(
        first_bad(&report),
        (
            12,
            EntryProblem::Missing {
                expected_entries: 20
            }
        )
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CheckpointBeyondLog { size: 20, .. }))
    );
}

#[test]
fn verify_catches_a_cut_inside_signed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    let path = entries_path(dir.path());
    let bytes = fs::read(&path).unwrap();
    let records = unframe(&bytes);
    let offset: usize = records[..15].iter().map(|(_, p)| 12 + p.len() + 32).sum();
    fs::write(&path, &bytes[..offset + 30]).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert_eq!(
        first_bad(&report),
        (
            15,
            EntryProblem::Missing {
                expected_entries: 20
            }
        )
    );
}

#[test]
fn verify_localises_by_checkpoints_when_derived_files_were_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    rewrite_entries(dir.path(), |r| {
        let text = String::from_utf8(r[7].1.clone()).unwrap();
        r[7].1 = text.replace("\"count\":7", "\"count\":8").into_bytes();
    });
    fs::remove_file(dir.path().join("tree.bin")).unwrap();
    fs::remove_file(dir.path().join("entries.idx")).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    // Checkpoint 5 still matches, checkpoint 10 does not: the change is in [5, 10).
    assert_eq!(
        first_bad(&report),
        (
            5,
            EntryProblem::RootMismatch {
                checkpoint_size: 10
            }
        )
    );
}

#[test]
fn verify_blames_the_tree_file_when_checkpoints_confirm_the_entries() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 20);
    let path = dir.path().join("tree.bin");
    let mut tree = fs::read(&path).unwrap();
    // Leaf 3 sits at post-order slot 2*3 - popcount(3) = 4.
    tree[4 * 32] ^= 0xff;
    fs::write(&path, tree).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(report.first_bad_entry.is_none(), "{report}");
    assert!(
        report
            .problems
            .contains(&Problem::TreeFileDamaged { entry: 3 }),
        "{report}"
    );
}

#[test]
fn verify_checks_checkpoint_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 8);
    let other = signer(&new_pkcs8()).public_key().clone();
    let report = verify(dir.path(), &other).unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.valid_checkpoints, 0);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CheckpointInvalid { .. }))
    );
    assert!(verify(dir.path(), &key).unwrap().is_ok());
}

#[test]
fn refuses_to_sign_a_checkpoint_inconsistent_with_the_last_one() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    log.append_batch(&(0..10).map(record).collect::<Vec<_>>())
        .unwrap();
    log.checkpoint().unwrap();
    log.append_batch(&(10..15).map(record).collect::<Vec<_>>())
        .unwrap();
    // Damage node (1, 4) (leaves 8-9): the consistency proof 10 -> 15 needs it, while
    // the current root does not.
    let slot = 2 * 8 - 1 + 4 - 2;
    let tree = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("tree.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&tree, &[0u8; 32], slot * 32).unwrap();
    assert!(matches!(
        log.checkpoint(),
        Err(AuditError::InconsistentWithCheckpoint {
            checkpoint_size: 10,
            size: 15
        })
    ));
}

#[test]
fn open_refuses_to_lose_signed_entries() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    build(dir.path(), &pkcs8, 20);
    // Entries cut below the index: acknowledged entries are gone.
    rewrite_entries(dir.path(), |r| r.truncate(12));
    let before = fs::read(entries_path(dir.path())).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), signer(&pkcs8)),
        Err(AuditError::Corrupt { .. })
    ));
    // Without the derived files, the signed checkpoint still protects them.
    fs::remove_file(dir.path().join("tree.bin")).unwrap();
    fs::remove_file(dir.path().join("entries.idx")).unwrap();
    assert!(matches!(
        AuditLog::open(dir.path(), signer(&pkcs8)),
        Err(AuditError::CheckpointBeyondLog {
            checkpoint_size: 20,
            entries: 12
        })
    ));
    // Nothing was changed by the refused opens.
    assert_eq!(fs::read(entries_path(dir.path())).unwrap(), before);
}

#[test]
fn open_rebuilds_deleted_derived_files() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 33);
    let tree = fs::read(dir.path().join("tree.bin")).unwrap();
    let index = fs::read(dir.path().join("entries.idx")).unwrap();
    fs::remove_file(dir.path().join("tree.bin")).unwrap();
    fs::remove_file(dir.path().join("entries.idx")).unwrap();
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!(log.size(), 33);
    drop(log);
    assert_eq!(fs::read(dir.path().join("tree.bin")).unwrap(), tree);
    assert_eq!(fs::read(dir.path().join("entries.idx")).unwrap(), index);
    assert!(verify(dir.path(), &key).unwrap().is_ok());
}

/// Snapshot of the three entry files.
#[derive(Clone)]
struct Files {
    entries: Vec<u8>,
    index: Vec<u8>,
    tree: Vec<u8>,
}

impl Files {
    fn read(dir: &Path) -> Self {
        Self {
            entries: fs::read(dir.join("entries.bin")).unwrap(),
            index: fs::read(dir.join("entries.idx")).unwrap(),
            tree: fs::read(dir.join("tree.bin")).unwrap(),
        }
    }
    fn write(&self, dir: &Path) {
        fs::write(dir.join("entries.bin"), &self.entries).unwrap();
        fs::write(dir.join("entries.idx"), &self.index).unwrap();
        fs::write(dir.join("tree.bin"), &self.tree).unwrap();
    }
}

/// Simulates crashes at random points of a batch append: the entries file cut anywhere
/// while the derived files are still old, or the entries complete while the derived
/// files are cut anywhere (the only states the write order allows, plus torn bytes).
#[test]
fn open_recovers_from_torn_appends() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 10);
    let before = Files::read(dir.path());
    let checkpoints = fs::read(dir.path().join("checkpoints.bin")).unwrap();
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    log.append_batch(&(10..25).map(record).collect::<Vec<_>>())
        .unwrap();
    let full_root = log.root();
    drop(log);
    let after = Files::read(dir.path());
    let records = unframe(&after.entries);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let state = if round % 2 == 0 {
            // Crash while writing entries: derived files untouched.
            let cut = rng.gen_range(before.entries.len()..=after.entries.len());
            Files {
                entries: after.entries[..cut].to_vec(),
                ..before.clone()
            }
        } else {
            // Crash while writing the derived files.
            let icut = rng.gen_range(before.index.len()..=after.index.len());
            let tcut = rng.gen_range(before.tree.len()..=after.tree.len());
            Files {
                entries: after.entries.clone(),
                index: after.index[..icut].to_vec(),
                tree: after.tree[..tcut].to_vec(),
            }
        };
        state.write(dir.path());
        // Whole records that reached the file survive.
        let mut whole = 0;
        let mut at = 0;
        for (_, p) in &records {
            at += 12 + p.len() + 32;
            if at <= state.entries.len() {
                whole += 1;
            }
        }
        let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
        assert_eq!(log.size(), whole, "round {round}");
        assert!(log.size() >= 10);
        for i in 0..log.size() {
            assert_eq!(count_of(&log.record(i).unwrap()), i);
        }
        if whole == 25 {
            assert_eq!(log.root(), full_root);
        }
        // The recovered log keeps working.
        let next = log.append(&record(whole)).unwrap();
        assert_eq!(next, whole);
        log.checkpoint().unwrap();
        drop(log);
        let report = verify(dir.path(), &key).unwrap();
        assert!(report.is_ok(), "round {round}: {report}");
        // Forget this round's checkpoint before the next simulated crash.
        fs::write(dir.path().join("checkpoints.bin"), &checkpoints).unwrap();
    }
}

#[test]
fn open_drops_a_torn_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 12);
    let path = dir.path().join("checkpoints.bin");
    let mut bytes = fs::read(&path).unwrap();
    let good_len = bytes.len();
    let last =
        Checkpoint::parse_and_verify(std::str::from_utf8(&unframe(&bytes)[2].1).unwrap(), &key)
            .unwrap();
    // Half of a fourth checkpoint record.
    let extra = frame(3, b"police.example/blindwatch-audit\n12\n");
    bytes.extend_from_slice(&extra[..extra.len() / 2]);
    fs::write(&path, &bytes).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(report.is_ok(), "{report}");
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!(log.latest_checkpoint(), Some(&last));
    drop(log);
    assert_eq!(fs::read(&path).unwrap().len(), good_len);
}

#[test]
fn reports_torn_tail_without_failing() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 6);
    let path = entries_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let extra = frame(6, &record(6).to_canonical_json().unwrap());
    bytes.extend_from_slice(&extra[..40]);
    fs::write(&path, &bytes).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.torn_tail_bytes, 40);
}

#[test]
fn error_messages_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    let err = log.inclusion_proof(3, 5).unwrap_err().to_string();
    assert!(err.contains("holds 0 entries"), "{err}");
    let err = blindwatch_audit::PartnerId::new("13800138000")
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("13800138000") && err.contains("use an opaque id"),
        "{err}"
    );
}

/// A record with a fixed time, so two logs can share a prefix.
fn fixed(n: u64) -> blindwatch_audit::AuditRecord {
    let mut r = record(n);
    r.time = blindwatch_audit::Timestamp::from_datetime(
        chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    );
    r
}

#[test]
fn verify_detects_forked_checkpoints() {
    let pkcs8 = new_pkcs8();
    // Log A: 0..15. Log B, same key: 0..12 then different entries.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut log_a = AuditLog::open(a.path(), signer(&pkcs8)).unwrap();
    log_a
        .append_batch(&(0..10).map(fixed).collect::<Vec<_>>())
        .unwrap();
    log_a.checkpoint().unwrap();
    log_a
        .append_batch(&(10..15).map(fixed).collect::<Vec<_>>())
        .unwrap();
    let key = log_a.public_key().clone();
    drop(log_a);
    let mut log_b = AuditLog::open(b.path(), signer(&pkcs8)).unwrap();
    log_b
        .append_batch(&(0..12).map(fixed).collect::<Vec<_>>())
        .unwrap();
    log_b
        .append_batch(&(100..103).map(fixed).collect::<Vec<_>>())
        .unwrap();
    let fork = log_b.checkpoint().unwrap();
    drop(log_b);

    // Smuggle B's checkpoint (validly signed by the same key) into A.
    let path = a.path().join("checkpoints.bin");
    let mut cps = unframe(&fs::read(&path).unwrap());
    cps.push((1, fork.text().as_bytes().to_vec()));
    fs::write(&path, reframe(&cps)).unwrap();

    let report = verify(a.path(), &key).unwrap();
    assert!(
        report.problems.contains(&Problem::CheckpointsInconsistent {
            earlier: 0,
            later: 1
        }),
        "{report}"
    );
    assert!(report.problems.contains(&Problem::CheckpointRootMismatch {
        position: 1,
        size: 15
    }));
    // Entries and checkpoint disagree after the last matching checkpoint (size 10).
    assert_eq!(
        first_bad(&report),
        (
            10,
            EntryProblem::RootMismatch {
                checkpoint_size: 15
            }
        )
    );
    // The writer refuses a log whose latest checkpoint it cannot reproduce.
    assert!(matches!(
        AuditLog::open(a.path(), signer(&pkcs8)),
        Err(AuditError::Corrupt { .. })
    ));
}

#[test]
fn a_damaged_unindexed_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = build(dir.path(), &pkcs8, 6);
    let path = entries_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let good_len = bytes.len();
    let mut extra = frame(6, &record(6).to_canonical_json().unwrap());
    extra[20] ^= 0x40;
    bytes.extend_from_slice(&extra);
    fs::write(&path, &bytes).unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.torn_tail_bytes, extra.len() as u64);
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!(log.size(), 6);
    drop(log);
    assert_eq!(fs::read(&path).unwrap().len(), good_len);
}

#[test]
fn verify_reports_damaged_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let key = build(dir.path(), &new_pkcs8(), 3);
    fs::write(dir.path().join("log.json"), b"{not json").unwrap();
    let report = verify(dir.path(), &key).unwrap();
    assert!(
        report.problems.contains(&Problem::MetadataDamaged),
        "{report}"
    );
    assert!(verify(dir.path().join("nope"), &key).is_err());
}

#[test]
fn open_rebuilds_large_derived_files_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    log.append_batch(&(0..20_000).map(record).collect::<Vec<_>>())
        .unwrap();
    log.checkpoint().unwrap();
    let root = log.root();
    drop(log);
    let tree = fs::read(dir.path().join("tree.bin")).unwrap();
    let index = fs::read(dir.path().join("entries.idx")).unwrap();
    // Keep a few acknowledged entries so the rebuild starts mid-file.
    fs::write(dir.path().join("entries.idx"), &index[..8 * 5]).unwrap();
    fs::write(dir.path().join("tree.bin"), &tree[..32 * 8]).unwrap();
    let log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
    assert_eq!((log.size(), log.root()), (20_000, root));
    drop(log);
    assert_eq!(fs::read(dir.path().join("tree.bin")).unwrap(), tree);
    assert_eq!(fs::read(dir.path().join("entries.idx")).unwrap(), index);
}
