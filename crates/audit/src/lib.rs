//! Blindwatch's tamper-evident audit log (privacy invariant 6).
//!
//! Every sensitive action — contributions accepted or refused, token evaluation batches,
//! models registered and run, queries, alert lifecycle, reveals, silences, policy loads —
//! is appended as an [`AuditRecord`] to an append-only log. The log is an RFC 9162 Merkle
//! tree (SHA-256, leaf hash `H(0x00 ‖ entry)`, node hash `H(0x01 ‖ left ‖ right)`) whose
//! state is committed to by Ed25519-signed checkpoints in the C2SP `tlog-checkpoint`
//! format. Anyone holding the log's verifier key can check inclusion and consistency
//! proofs offline, and [`verify`] re-checks a whole log directory.
//!
//! # The privacy rule: no personal data in the audit log
//!
//! The log is handed to auditors and partners, so it must never hold a raw identifier, a
//! token, a name or an attribute value. The types enforce this structurally:
//!
//! - every field of an [`AuditEvent`] is an id ([`PartnerId`], [`ModelId`], [`AlertId`], …),
//!   a digest ([`Sha256Digest`], e.g. of a query's text), a count, or a small enum
//!   ([`Tier`], [`ReasonCode`], [`Purpose`]); there is no free-form text or "value" field;
//! - ids are validated when built *and* when read back: 1–128 ASCII letters, digits and
//!   `._:@/-`, never a run of 11 or more digits (a phone or ID-card number), so a name, an
//!   address or an identifier cannot be passed off as an id; codes are lowercase slugs;
//! - validation errors never echo the refused value;
//! - the actor is the authenticated platform principal (an account), never a data subject.
//!
//! New event kinds must follow the same rule: add a variant with typed fields, never a
//! string that callers could fill with data.
//!
//! # Using the log
//!
//! ```
//! use blindwatch_audit::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
//! #     .map_err(|_| "keygen")?;
//! let signer = LogSigner::from_pkcs8("police.example/audit", pkcs8.as_ref())?;
//! let key = signer.public_key().clone();
//! let mut log = AuditLog::open(dir.path(), signer)?;
//! let index = log.append(&AuditRecord::now(
//!     Principal::new("partner:hospital")?,
//!     AuditEvent::TokenEvaluationBatch { partner: PartnerId::new("hospital")?, count: 500 },
//! ))?;
//! let checkpoint = log.checkpoint()?;
//! let bundle = log.inclusion_bundle(index)?;
//! // An independent party needs only the bundle and the verifier key:
//! let verified = verify_inclusion_bundle(&InclusionBundle::from_json(&bundle.to_json()?)?, &key)?;
//! assert_eq!(verified.checkpoint, checkpoint);
//! drop(log);
//! assert!(verify(dir.path(), &key)?.is_ok());
//! # Ok(()) }
//! ```
//!
//! # On-disk format (version `blindwatch-audit-log/1`)
//!
//! A log is one directory. All integers are big-endian.
//!
//! | file | content |
//! |---|---|
//! | `log.json` | `{"format": "blindwatch-audit-log/1", "origin": …, "verifier_key": …}` |
//! | `entries.bin` | the entries, as framed records (the source of truth) |
//! | `entries.idx` | u64 end offset of each entry record in `entries.bin` (derived) |
//! | `tree.bin` | 32-byte hashes of every complete subtree, in post-order (derived) |
//! | `checkpoints.bin` | signed checkpoints, as framed records, oldest first |
//! | `lock` | held exclusively by the one writing process |
//!
//! **Record framing** (entries and checkpoints):
//! `u32 length ‖ u64 index ‖ payload ‖ SHA-256(length ‖ index ‖ payload)`, with
//! `1 <= length <= 65536`. `index` is the entry's position (for checkpoints, the
//! checkpoint's position). The checksum makes a torn or altered record detectable; the
//! index makes a dropped, reordered or inserted record detectable. An entry's payload is
//! the canonical JSON of an [`AuditRecord`] (compact, fields in declaration order), and
//! its Merkle leaf hash is `SHA-256(0x00 ‖ payload)`.
//!
//! **Tree file**: the node `(level, i)` is the root of the complete subtree over leaves
//! `[i·2^level, (i+1)·2^level)`. Appending leaf `n` completes the leaf and then each parent
//! while the index is odd; those nodes are appended in that order, so node `(level, i)`
//! lives at slot `2·j − popcount(j) + 2^(level+1) − 2` with `j = i·2^level`, and a tree of
//! `n` leaves has `2n − popcount(n)` nodes. A proof needs `O(log n)` node reads: each
//! proof element is a complete subtree (one read) except at most one right-edge subtree,
//! which is combined from at most `log2 n` complete ones.
//!
//! **Checkpoint payload**: the C2SP signed note, see [`Checkpoint`]:
//!
//! ```text
//! <origin>
//! <size>
//! <base64 root>
//!
//! — <origin> <base64(key id ‖ Ed25519 signature)>
//! ```
//!
//! The key name is the origin; the key id is the first 4 bytes of
//! `SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)`. The verifier key string is
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>` ([`LogPublicKey::to_vkey`]).
//!
//! # Durability and crash recovery
//!
//! An append writes its records to `entries.bin` and fsyncs it, then writes and fsyncs
//! `entries.idx` and `tree.bin`, and only then returns. [`AuditLog::append_batch`] commits
//! a whole batch with one fsync per file. So the derived files never get ahead of durable
//! entries, and on [`AuditLog::open`]:
//!
//! - entries the index covers are *acknowledged*; the last one is re-checked against the
//!   index and its stored leaf hash;
//! - whole, correctly numbered records after them (an append that crashed before indexing)
//!   are kept and indexed; from the first torn or broken record on, the tail is truncated;
//! - a torn last checkpoint record is truncated (it was never returned);
//! - if the latest signed checkpoint covers more entries than remain, or its root no
//!   longer matches the stored tree, opening fails: signed entries are never silently
//!   dropped. Nothing is changed on disk before these checks pass.
//!
//! After a crash a prefix of an unacknowledged batch may survive; callers must treat an
//! action as audited only once `append` returned `Ok`. Deleting `entries.idx` and
//! `tree.bin` and reopening rebuilds them from the entries.
//!
//! Before signing, [`AuditLog::checkpoint`] builds a consistency proof from the stored tree
//! to the latest signed checkpoint and verifies it, so the log never signs a fork of itself.
//!
//! # Inclusion bundle (`blindwatch-audit-inclusion/1`)
//!
//! [`AuditLog::inclusion_bundle`] returns an [`InclusionBundle`], printable (`Display`) and
//! serialisable as JSON:
//!
//! ```json
//! {
//!   "format": "blindwatch-audit-inclusion/1",
//!   "index": 17,
//!   "entry": "<base64 of the exact entry bytes>",
//!   "leaf_hash": "<base64 SHA-256(0x00 ‖ entry)>",
//!   "tree_size": 1000,
//!   "root": "<base64 root hash>",
//!   "proof": ["<base64 hash>", "…"],
//!   "checkpoint": "<the signed checkpoint note text>"
//! }
//! ```
//!
//! To verify one independently ([`verify_inclusion_bundle`] does exactly this):
//! 1. parse `checkpoint` as a signed note; its first line must be the expected origin, and
//!    a signature line `— <origin> <base64>` must decode to the 4-byte key id followed by
//!    a valid Ed25519 signature of the note body (the text up to and including the
//!    newline before the blank line);
//! 2. the note's size and root lines must equal `tree_size` and `root`;
//! 3. `leaf_hash` must equal `SHA-256(0x00 ‖ entry)`;
//! 4. run RFC 9162 section 2.1.3.2 on `index`, `tree_size`, `leaf_hash`, `proof`, `root`.
//!
//! Consistency between two checkpoints is checked with [`verify_consistency`]
//! (RFC 9162 section 2.1.4.2) on a proof from [`AuditLog::consistency_proof`].

mod bundle;
mod checkpoint;
mod error;
mod event;
mod log;
mod merkle;
mod storage;
mod verify;

pub use bundle::{BUNDLE_FORMAT, InclusionBundle, VerifiedInclusion, verify_inclusion_bundle};
pub use checkpoint::{Checkpoint, LogPublicKey, LogSigner};
pub use error::{AuditError, ProofError};
pub use event::{
    AlertId, AuditEvent, AuditRecord, DatasetId, MAX_DIGIT_RUN, ModelId, PartnerId, Principal,
    Purpose, ReasonCode, Sha256Digest, SilenceId, StationId, Tier, Timestamp,
};
pub use log::AuditLog;
pub use merkle::{
    EMPTY_ROOT, Hash, leaf_hash, node_hash, root_from_inclusion_proof, verify_consistency,
    verify_inclusion,
};
pub use storage::MAX_ENTRY_BYTES;
pub use verify::{BadEntry, EntryProblem, MAX_LISTED_ENTRIES, Problem, VerifyReport, verify};
