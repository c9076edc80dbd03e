//! The manifest that travels with every sealed contribution, signed by the partner in a
//! DSSE envelope. It describes the file (hash, size, rows, schema), never its contents.

use std::collections::BTreeMap;

use blindwatch_common::IdentifierKind;

use crate::keys::KeyId;
use crate::sign::{Envelope, EnvelopeError, SigningKey, VerifyingKey};
use crate::token::TokenMode;

pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.blindwatch.manifest+json; version=1";

/// The manifest format this version writes and reads. 2 added `token_counts`.
pub const MANIFEST_FORMAT: u32 = 2;

/// What a sealed column holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "content", rename_all = "snake_case")]
pub enum SealedContent {
    /// 16-byte tokens of an identifier of this kind.
    Token { kind: IdentifierKind },
    /// A normalised identifier the partner's contract marks revealable (encrypted like all).
    RevealableIdentifier { kind: IdentifierKind },
    /// An attribute column.
    Attribute,
}

// No `deny_unknown_fields` here: serde does not support it together with `flatten`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SealedColumn {
    pub name: String,
    /// Arrow data type as arrow prints it (`Utf8`, `Date32`, `FixedSizeBinary(16)`, ...).
    pub data_type: String,
    #[serde(flatten)]
    pub content: SealedContent,
}

/// SHA-256 over the canonical JSON of the column list.
pub fn schema_digest(columns: &[SealedColumn]) -> String {
    crate::sha256_hex(&serde_json::to_vec(columns).unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    pub mode: TokenMode,
    pub key_id: KeyId,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub partner: String,
    pub dataset: String,
    pub sequence: u64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub file_name: String,
    pub file_sha256: String,
    pub file_bytes: u64,
    pub row_count: u64,
    pub columns: Vec<SealedColumn>,
    pub schema_digest: String,
    pub tokens: TokenInfo,
    pub platform_key_id: KeyId,
    pub partner_key_id: KeyId,
    /// Rows read from the export, before rejections.
    pub input_rows: u64,
    /// Rejected rows by reason code (never by value).
    pub rejected_rows: BTreeMap<String, u64>,
    /// Non-null tokens per token column: the valid identifiers the partner read. Ingest
    /// counts them again in the file.
    pub token_counts: BTreeMap<String, u64>,
}

impl Manifest {
    /// `<partner>.<dataset>`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.partner, self.dataset)
    }

    pub fn sign(&self, key: &SigningKey) -> Envelope {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        Envelope::sign(MANIFEST_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies the envelope with `key` and parses the manifest it carries.
    pub fn verify(envelope: &Envelope, key: &VerifyingKey) -> Result<Manifest, EnvelopeError> {
        let payload = envelope.verify(MANIFEST_PAYLOAD_TYPE, key)?;
        serde_json::from_slice(&payload).map_err(|_| EnvelopeError::Format)
    }

    /// Reads the manifest out of an envelope without checking the signature, to find out who
    /// claims to have signed it. Never trust what this returns before [`Manifest::verify`].
    pub fn peek_unverified(envelope: &Envelope) -> Option<Manifest> {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&envelope.payload)
            .ok()?;
        serde_json::from_slice(&payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_a_signed_envelope() {
        let key = SigningKey::generate().unwrap();
        let m = Manifest {
            format: MANIFEST_FORMAT,
            partner: "hospital".into(),
            dataset: "visits".into(),
            sequence: 1,
            created_at: "2026-11-30T00:00:00Z".into(),
            file_name: "f.parquet".into(),
            file_sha256: "00".into(),
            file_bytes: 1,
            row_count: 1,
            columns: vec![
                SealedColumn {
                    name: "person".into(),
                    data_type: "FixedSizeBinary(16)".into(),
                    content: SealedContent::Token {
                        kind: IdentifierKind::Person,
                    },
                },
                SealedColumn {
                    name: "d".into(),
                    data_type: "Date32".into(),
                    content: SealedContent::Attribute,
                },
            ],
            schema_digest: "x".into(),
            tokens: TokenInfo {
                mode: TokenMode::Consortium,
                key_id: KeyId::derive("t", b"k"),
            },
            platform_key_id: KeyId::derive("p", b"k"),
            partner_key_id: key.id().clone(),
            input_rows: 1,
            rejected_rows: BTreeMap::new(),
            token_counts: BTreeMap::from([("person".into(), 1)]),
        };
        let env = Envelope::from_json(&m.sign(&key).to_json()).unwrap();
        assert_eq!(Manifest::peek_unverified(&env).as_ref(), Some(&m));
        assert_eq!(Manifest::verify(&env, &key.verifying_key()).unwrap(), m);
    }
}
