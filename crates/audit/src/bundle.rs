//! Self-contained inclusion-proof bundles, and their standalone verifier.
//!
//! A bundle is everything an independent party needs, together with the log's verifier
//! key, to check offline that an entry is in the log: see the crate docs for the format
//! and the verification steps.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, LogPublicKey};
use crate::error::AuditError;
use crate::event::AuditRecord;
use crate::merkle::{Hash, leaf_hash, verify_inclusion};

/// Format tag of inclusion bundles.
pub const BUNDLE_FORMAT: &str = "blindwatch-audit-inclusion/1";

/// Serde helpers writing hashes and bytes as standard base64 with padding.
pub(crate) mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("expected the base64 of a 32-byte hash"))
    }

    pub(crate) mod bytes {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&B64.encode(b))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let s = String::deserialize(d)?;
            B64.decode(s)
                .map_err(|_| serde::de::Error::custom("expected base64"))
        }
    }

    pub(crate) mod hashes {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(v: &[Hash], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(|h| B64.encode(h)))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
            let v = Vec::<String>::deserialize(d)?;
            v.into_iter()
                .map(|s| {
                    B64.decode(s)
                        .ok()
                        .and_then(|v| v.try_into().ok())
                        .ok_or_else(|| {
                            serde::de::Error::custom("expected the base64 of a 32-byte hash")
                        })
                })
                .collect()
        }
    }
}

/// A portable proof that one entry is in the log, against a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Index of the entry (0-based).
    pub index: u64,
    /// The exact stored bytes of the entry (its canonical JSON), base64.
    #[serde(with = "b64::bytes")]
    pub entry: Vec<u8>,
    /// `SHA-256(0x00 ‖ entry)`, base64.
    #[serde(with = "b64")]
    pub leaf_hash: Hash,
    /// Size of the tree the proof is for (= the checkpoint's size).
    pub tree_size: u64,
    /// Root hash of that tree (= the checkpoint's root), base64.
    #[serde(with = "b64")]
    pub root: Hash,
    /// RFC 9162 inclusion path, leaf to root, base64.
    #[serde(with = "b64::hashes")]
    pub proof: Vec<Hash>,
    /// The signed checkpoint (C2SP signed note text).
    pub checkpoint: String,
}

impl InclusionBundle {
    pub(crate) fn new(
        index: u64,
        entry: Vec<u8>,
        leaf_hash: Hash,
        checkpoint: &Checkpoint,
        proof: Vec<Hash>,
    ) -> Self {
        Self {
            format: BUNDLE_FORMAT.to_owned(),
            index,
            entry,
            leaf_hash,
            tree_size: checkpoint.size(),
            root: *checkpoint.root(),
            proof,
            checkpoint: checkpoint.text().to_owned(),
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, AuditError> {
        serde_json::to_string_pretty(self).map_err(|e| AuditError::encoding("encoded", &e))
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<Self, AuditError> {
        serde_json::from_str(text).map_err(|e| AuditError::InvalidBundle {
            what: format!(
                "it is not bundle JSON (error at line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }
}

impl fmt::Display for InclusionBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Blindwatch audit inclusion proof ({})", self.format)?;
        writeln!(f, "entry index: {}", self.index)?;
        match std::str::from_utf8(&self.entry) {
            Ok(text) => writeln!(f, "entry:       {text}")?,
            Err(_) => writeln!(f, "entry:       (not UTF-8) {}", B64.encode(&self.entry))?,
        }
        writeln!(f, "leaf hash:   {}", B64.encode(self.leaf_hash))?;
        writeln!(f, "tree size:   {}", self.tree_size)?;
        writeln!(f, "root:        {}", B64.encode(self.root))?;
        writeln!(f, "proof:       {} hashes, leaf to root", self.proof.len())?;
        for (i, h) in self.proof.iter().enumerate() {
            writeln!(f, "  {i:>2} {}", B64.encode(h))?;
        }
        writeln!(f, "checkpoint:")?;
        for line in self.checkpoint.lines() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a verified bundle proves.
#[derive(Debug, Clone)]
pub struct VerifiedInclusion {
    /// The entry's index.
    pub index: u64,
    /// The entry, decoded.
    pub record: AuditRecord,
    /// The checkpoint it is included in.
    pub checkpoint: Checkpoint,
}

/// Verifies an inclusion bundle offline with only the log's verifier key.
///
/// Steps (any independent implementation must do the same):
/// 1. the checkpoint is a signed note for the key's origin with a valid Ed25519 signature
///    by the key (name and key id match);
/// 2. `tree_size` and `root` equal the checkpoint's size and root;
/// 3. `leaf_hash` equals `SHA-256(0x00 ‖ entry)`;
/// 4. the RFC 9162 section 2.1.3.2 algorithm accepts `proof` for `index`, `tree_size`,
///    `leaf_hash` and `root`;
/// 5. the entry decodes as an audit record.
pub fn verify_inclusion_bundle(
    bundle: &InclusionBundle,
    key: &LogPublicKey,
) -> Result<VerifiedInclusion, AuditError> {
    let bad = |what: &str| AuditError::InvalidBundle { what: what.into() };
    if bundle.format != BUNDLE_FORMAT {
        return Err(bad("its format tag is not blindwatch-audit-inclusion/1"));
    }
    let checkpoint = Checkpoint::parse_and_verify(&bundle.checkpoint, key)?;
    if checkpoint.size() != bundle.tree_size || *checkpoint.root() != bundle.root {
        return Err(bad(
            "its tree size or root differs from the signed checkpoint",
        ));
    }
    if leaf_hash(&bundle.entry) != bundle.leaf_hash {
        return Err(bad("its leaf hash is not the hash of its entry"));
    }
    verify_inclusion(
        bundle.index,
        bundle.tree_size,
        &bundle.leaf_hash,
        &bundle.proof,
        &bundle.root,
    )?;
    let record = AuditRecord::from_json(&bundle.entry)?;
    Ok(VerifiedInclusion {
        index: bundle.index,
        record,
        checkpoint,
    })
}
