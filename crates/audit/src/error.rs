//! Errors of the audit log.
//!
//! Every message says what was wrong and what to do about it. Messages name files, byte
//! offsets, entry indexes and sizes, never the content of an entry or an identifier value:
//! a value that failed validation might be exactly the personal data the log must not hold.

use std::path::PathBuf;

/// Errors returned by the audit log, its proofs and its checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error(
        "could not {action} {path}: {source}; check that the log directory exists, is writable by this user and that the disk is not full"
    )]
    Io {
        /// What was being done, e.g. "read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Another process holds the log's lock.
    #[error(
        "the audit log at {path} is in use by another process; stop that process or wait for it to finish (one writer per log directory)"
    )]
    InUse {
        /// The log directory.
        path: PathBuf,
    },

    /// A log file is damaged in a way that a crash cannot explain.
    #[error(
        "audit log file {path} is damaged at byte {offset}: {what}; do not append to this log: run `blindwatch audit verify` on it and restore the directory from a backup"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage.
        offset: u64,
        /// What is wrong.
        what: String,
    },

    /// A signed checkpoint covers entries that are not in the log any more.
    #[error(
        "the latest signed checkpoint covers {checkpoint_size} entries but the log holds only {entries}: signed entries were lost or removed; do not append: restore the log directory from a backup and run `blindwatch audit verify`"
    )]
    CheckpointBeyondLog {
        /// Size the checkpoint signs.
        checkpoint_size: u64,
        /// Entries actually present.
        entries: u64,
    },

    /// The log's tree does not extend the latest signed checkpoint.
    #[error(
        "refusing to sign: the log's tree at size {size} is not consistent with the signed checkpoint at size {checkpoint_size}; the log files were altered: run `blindwatch audit verify` and restore from a backup"
    )]
    InconsistentWithCheckpoint {
        /// Size of the latest signed checkpoint.
        checkpoint_size: u64,
        /// Current tree size.
        size: u64,
    },

    /// The log directory was created with another key or origin.
    #[error(
        "this audit log was created for {expected}, but it was opened with {found}; open it with the key it was created with"
    )]
    KeyMismatch {
        /// The log's recorded verifier key (name+id+key).
        expected: String,
        /// The verifier key that was supplied.
        found: String,
    },

    /// The signing key could not be used.
    #[error(
        "the Ed25519 log key was rejected ({reason}); supply a PKCS#8 (v1 or v2) Ed25519 private key"
    )]
    InvalidKey {
        /// Why ring rejected the key.
        reason: String,
    },

    /// A verifier key string could not be parsed.
    #[error(
        "the verifier key is not valid: {what}; expected `<name>+<8 hex digits key id>+<base64 of 0x01 and the 32-byte Ed25519 public key>`"
    )]
    InvalidVerifierKey {
        /// What is wrong.
        what: &'static str,
    },

    /// A log origin / key name is not acceptable.
    #[error(
        "the log origin (key name) is not valid: {what}; use a short URL-like name such as `police.example/blindwatch-audit` (printable ASCII, no spaces or '+')"
    )]
    InvalidOrigin {
        /// What is wrong.
        what: &'static str,
    },

    /// An id, principal, purpose or reason code failed validation. The value is never echoed.
    #[error("the {kind} is not valid: {what}; {rule}")]
    InvalidId {
        /// Which kind of field, e.g. "partner id".
        kind: &'static str,
        /// What is wrong.
        what: &'static str,
        /// The rule the field must follow.
        rule: &'static str,
    },

    /// An encoded entry is larger than the log accepts.
    #[error(
        "an audit entry of {size} bytes exceeds the limit of {max} bytes; audit entries hold ids, digests and counts only, so this points to a bug in the caller"
    )]
    EntryTooLarge {
        /// Encoded size.
        size: usize,
        /// Maximum accepted.
        max: usize,
    },

    /// An entry could not be encoded or decoded.
    #[error(
        "an audit entry could not be {action} as JSON ({category} error at line {line}, column {column}); entries must be audit records written by this log"
    )]
    Encoding {
        /// "encoded" or "decoded".
        action: &'static str,
        /// serde_json's error category (io, syntax, data, eof).
        category: &'static str,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },

    /// An entry index is outside the log.
    #[error(
        "entry index {index} is outside the tree of size {size}; ask for an index below {size}"
    )]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Tree size it was checked against.
        size: u64,
    },

    /// A proof was requested for tree sizes the log cannot provide.
    #[error(
        "cannot build that proof: {what}; the log currently holds {size} entries, ask for tree sizes within it"
    )]
    InvalidProofRequest {
        /// What is wrong with the request.
        what: String,
        /// Current log size.
        size: u64,
    },

    /// A proof did not verify.
    #[error(
        "proof verification failed: {0}; fetch a fresh proof and checkpoint from the log, and if it still fails treat the log as tampered with"
    )]
    Proof(#[from] ProofError),

    /// A checkpoint (signed note) is malformed.
    #[error(
        "the checkpoint is malformed: {what}; a checkpoint is `<origin>\\n<size>\\n<base64 root>\\n\\n— <key name> <base64 signature>\\n`"
    )]
    MalformedCheckpoint {
        /// What is wrong.
        what: String,
    },

    /// No signature on a checkpoint verified under the expected key.
    #[error(
        "the checkpoint carries no valid signature by key {key}; it was not signed by this log's key or it was altered: obtain the checkpoint from the log again"
    )]
    BadSignature {
        /// Verifier key name and id.
        key: String,
    },

    /// An inclusion bundle is malformed or does not verify.
    #[error("the inclusion bundle is not valid: {what}; request a fresh bundle from the log")]
    InvalidBundle {
        /// What is wrong.
        what: String,
    },

    /// The log needs a checkpoint that does not exist yet.
    #[error(
        "no signed checkpoint covers entry {index} yet (latest checkpoint size: {checkpoint_size}); sign a checkpoint first (`checkpoint()`), then ask again"
    )]
    NoCheckpoint {
        /// The entry asked for.
        index: u64,
        /// Size of the latest checkpoint, 0 if none.
        checkpoint_size: u64,
    },

    /// An earlier write failed half-way; the in-memory state is no longer trusted.
    #[error(
        "an earlier write to the audit log failed, so this handle refuses further writes; reopen the log (`AuditLog::open`) to recover its tail, then retry"
    )]
    Poisoned,
}

impl AuditError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// Maps a serde_json error to a message without the offending content.
    pub(crate) fn encoding(action: &'static str, e: &serde_json::Error) -> Self {
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "end of input",
        };
        Self::Encoding {
            action,
            category,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Why an inclusion or consistency proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexBeyondSize {
        /// Leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// A hash has the wrong length.
    #[error("{what} is {len} bytes long, a SHA-256 hash is 32")]
    BadHashLength {
        /// Which hash.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has the wrong number of hashes for these tree sizes")]
    WrongLength,
    /// The recomputed root differs from the expected one.
    #[error("the recomputed root hash does not match the expected root")]
    RootMismatch,
    /// The second tree is smaller than the first.
    #[error("the new tree size {new} is smaller than the old tree size {old}")]
    SizeDecreased {
        /// Old size.
        old: u64,
        /// New size.
        new: u64,
    },
    /// Consistency from the empty tree is meaningless (RFC 9162 requires 0 < old size).
    #[error("a consistency proof from the empty tree proves nothing (RFC 9162 needs old size > 0)")]
    EmptyOldTree,
    /// Equal sizes need an empty proof.
    #[error("equal tree sizes need an empty proof")]
    NonEmptyProofForEqualSizes,
    /// Different sizes need a non-empty proof.
    #[error("different tree sizes need a non-empty proof")]
    EmptyProof,
}
