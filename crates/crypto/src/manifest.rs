//! The manifest that travels with every sealed contribution, signed by the partner in a
//! DSSE envelope. It describes the file (hash, size, rows, schema), never its contents.

use std::collections::BTreeMap;

use crate::keys::KeyId;
use crate::sign::{Envelope, EnvelopeError, SigningKey, VerifyingKey};
use crate::token::TokenMode;

pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.blindwatch.manifest+json; version=1";

/// The manifest format this version writes. 2 added `token_counts`, 3 `allow_empty`.
pub const MANIFEST_FORMAT: u32 = 3;

/// The formats this version reads: 2 (before `allow_empty`, which it may not set) and 3.
pub const MANIFEST_FORMATS: [u32; 2] = [2, 3];

/// The largest sequence number: the catalog stores sequences as signed 64-bit integers.
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// Why the sealer rejects a row over an identifier column: `<column>:<code>` in
/// `rejected_rows` (the codes of [`blindwatch_common::NormaliseError::reason_code`]).
pub const IDENTIFIER_REJECTIONS: [&str; 9] = [
    "blank",
    "id_length",
    "id_character",
    "id_birth_date",
    "id_check_digit",
    "phone_invalid",
    "plate_invalid",
    "control_character",
    "too_long",
];

/// Why the sealer rejects a row over an attribute column: a blank required value, or a
/// value that does not parse as the column's type.
pub mod attribute_rejection {
    pub const BLANK: &str = "blank";
    pub const INTEGER: &str = "bad_integer";
    pub const NUMBER: &str = "bad_number";
    pub const BOOLEAN: &str = "bad_boolean";
    pub const DATE: &str = "bad_date";
    pub const TIMESTAMP: &str = "bad_timestamp";
}

/// File names of a package: `<partner>.<dataset>.<sequence:08>.{parquet,manifest.json}`.
pub fn package_stem(partner: &str, dataset: &str, sequence: u64) -> String {
    format!("{partner}.{dataset}.{sequence:08}")
}

// The sealed schema's types live with the contracts that imply them; the manifest carries them.
pub use blindwatch_contract::{SealedColumn, SealedContent, SealedType};

impl crate::PlainJson for SealedColumn {}
impl crate::PlainJson for Manifest {}

/// SHA-256 over the canonical JSON of the column list.
pub fn schema_digest(columns: &[SealedColumn]) -> String {
    crate::sha256_hex(&crate::plain_json(columns))
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
    /// The partner says a contribution without rows is meant (`partner seal --allow-empty`):
    /// without it, the platform refuses to let an empty file replace a dataset. Format 3.
    #[serde(default)]
    pub allow_empty: bool,
}

/// A manifest field outside the grammar this version writes. Names the field and the rule,
/// never the value (it is the sender's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {rule}")]
pub struct GrammarError {
    pub field: &'static str,
    pub rule: &'static str,
}

fn field(field: &'static str, rule: &'static str) -> GrammarError {
    GrammarError { field, rule }
}

/// Lower-case ASCII letters, digits, `_` and `-`, starting with a letter, at most 64 bytes:
/// the names of partners, datasets and columns.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SSZ`: RFC 3339 in UTC at whole seconds, as the sealer writes it.
pub fn is_utc_seconds(s: &str) -> bool {
    // Twenty characters starting with a digit: no signed or five-digit years.
    s.len() == 20
        && s.starts_with(|c: char| c.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%SZ")
            .is_ok_and(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string() == s)
}

/// Whether `code` is one the sealer gives for a rejected row, for a column of this role.
pub fn is_rejection_code(code: &str, identifier: bool) -> bool {
    use attribute_rejection as a;
    if identifier {
        IDENTIFIER_REJECTIONS.contains(&code)
    } else {
        [
            a::BLANK,
            a::INTEGER,
            a::NUMBER,
            a::BOOLEAN,
            a::DATE,
            a::TIMESTAMP,
        ]
        .contains(&code)
    }
}

impl Manifest {
    /// `<partner>.<dataset>`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.partner, self.dataset)
    }

    pub fn sign(&self, key: &SigningKey) -> Envelope {
        let payload = crate::plain_json(self);
        Envelope::sign(MANIFEST_PAYLOAD_TYPE, &payload, key)
    }

    /// Verifies the envelope with `key` and parses the manifest it carries.
    pub fn verify(envelope: &Envelope, key: &VerifyingKey) -> Result<Manifest, EnvelopeError> {
        let payload = envelope.verify(MANIFEST_PAYLOAD_TYPE, key)?;
        serde_json::from_slice(&payload).map_err(|_| EnvelopeError::Format)
    }

    /// Checks every field against the closed grammar of what the sealer writes: a known
    /// format, plain names, a sequence in 1..=[`MAX_SEQUENCE`], RFC 3339 UTC time, the
    /// package's own file name, hex digests and key ids, consistent row counts, rejection
    /// reasons `<column>:<code>` with a known code. What depends on the contract (the
    /// columns, which column a reason names) is the platform's check.
    pub fn check_grammar(&self) -> Result<(), GrammarError> {
        if !MANIFEST_FORMATS.contains(&self.format) {
            return Err(field(
                "format",
                "not a format this platform reads (2 or 3): seal again with the partner tool of this version",
            ));
        }
        if self.allow_empty && self.format < 3 {
            return Err(field("allow_empty", "format 2 has no `allow_empty`"));
        }
        if !is_plain_name(&self.partner) {
            return Err(field(
                "partner",
                "a lower-case name (letters, digits, `_`, `-`)",
            ));
        }
        if !is_plain_name(&self.dataset) {
            return Err(field(
                "dataset",
                "a lower-case name (letters, digits, `_`, `-`)",
            ));
        }
        if !(1..=MAX_SEQUENCE).contains(&self.sequence) {
            return Err(field("sequence", "from 1 to 2^63 - 1"));
        }
        if !is_utc_seconds(&self.created_at) {
            return Err(field(
                "created_at",
                "an RFC 3339 time in UTC at whole seconds (YYYY-MM-DDTHH:MM:SSZ)",
            ));
        }
        let stem = package_stem(&self.partner, &self.dataset, self.sequence);
        if self.file_name != format!("{stem}.parquet") {
            return Err(field(
                "file_name",
                "the package's own name, <partner>.<dataset>.<sequence>.parquet",
            ));
        }
        if !is_lower_hex(&self.file_sha256, 64) {
            return Err(field("file_sha256", "64 lower-case hex digits"));
        }
        if !is_lower_hex(&self.schema_digest, 64) {
            return Err(field("schema_digest", "64 lower-case hex digits"));
        }
        // Magic, footer length and magic again: the least a Parquet file holds.
        if self.file_bytes < 12 {
            return Err(field("file_bytes", "a Parquet file has at least 12 bytes"));
        }
        for (name, id) in [
            ("tokens.key_id", &self.tokens.key_id),
            ("platform_key_id", &self.platform_key_id),
            ("partner_key_id", &self.partner_key_id),
        ] {
            if !is_lower_hex(id.as_str(), 16) {
                return Err(field(name, "a key id: 16 lower-case hex digits"));
            }
        }
        if self.columns.iter().any(|c| !is_plain_name(&c.name)) {
            return Err(field("columns", "column names are lower-case names"));
        }
        let mut rejected = 0u64;
        for (reason, n) in &self.rejected_rows {
            let Some((column, code)) = reason.split_once(':') else {
                return Err(field("rejected_rows", "reasons are `<column>:<code>`"));
            };
            if !is_plain_name(column)
                || !(is_rejection_code(code, true) || is_rejection_code(code, false))
            {
                return Err(field(
                    "rejected_rows",
                    "reasons are `<column>:<code>` with a code the sealer gives",
                ));
            }
            if *n == 0 {
                return Err(field(
                    "rejected_rows",
                    "a listed reason counts at least one row",
                ));
            }
            rejected = rejected
                .checked_add(*n)
                .ok_or_else(|| field("rejected_rows", "the counts overflow"))?;
        }
        if self.row_count.checked_add(rejected) != Some(self.input_rows) {
            return Err(field(
                "input_rows",
                "rows read must equal rows sealed plus rows rejected",
            ));
        }
        if self.token_counts.values().any(|n| *n > self.row_count) {
            return Err(field(
                "token_counts",
                "a token column cannot hold more tokens than the file has rows",
            ));
        }
        Ok(())
    }

    /// The partner an envelope's payload names, read without checking the signature or the
    /// rest of the payload: whose key to verify it with. Never trust it before verifying.
    pub fn peek_partner(envelope: &Envelope) -> Option<String> {
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&envelope.payload)
            .ok()?;
        let value: serde_json::Value = serde_json::from_slice(&payload).ok()?;
        value.get("partner")?.as_str().map(str::to_owned)
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

    fn sample(key: &SigningKey) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            partner: "hospital".into(),
            dataset: "visits".into(),
            sequence: 1,
            created_at: "2026-11-30T00:00:00Z".into(),
            file_name: "hospital.visits.00000001.parquet".into(),
            file_sha256: "0".repeat(64),
            file_bytes: 100,
            row_count: 1,
            columns: vec![
                SealedColumn {
                    name: "person".into(),
                    data_type: SealedType::Token,
                    content: SealedContent::Token {
                        kind: blindwatch_common::IdentifierKind::Person,
                    },
                },
                SealedColumn {
                    name: "d".into(),
                    data_type: SealedType::Date32,
                    content: SealedContent::Attribute,
                },
            ],
            schema_digest: "a".repeat(64),
            tokens: TokenInfo {
                mode: TokenMode::Consortium,
                key_id: KeyId::derive("t", b"k"),
            },
            platform_key_id: KeyId::derive("p", b"k"),
            partner_key_id: key.id().clone(),
            input_rows: 3,
            rejected_rows: BTreeMap::from([("id_number:id_check_digit".into(), 2)]),
            token_counts: BTreeMap::from([("person".into(), 1)]),
            allow_empty: false,
        }
    }

    #[test]
    fn manifest_round_trips_through_a_signed_envelope() {
        let key = SigningKey::generate().unwrap();
        let m = sample(&key);
        let env = Envelope::from_json(&m.sign(&key).to_json()).unwrap();
        assert_eq!(Manifest::peek_unverified(&env).as_ref(), Some(&m));
        assert_eq!(Manifest::verify(&env, &key.verifying_key()).unwrap(), m);
    }

    #[test]
    fn format_2_manifests_still_parse() {
        let key = SigningKey::generate().unwrap();
        let mut json = serde_json::to_value(sample(&key)).unwrap();
        json["format"] = 2.into();
        json.as_object_mut().unwrap().remove("allow_empty");
        let m: Manifest = serde_json::from_value(json).unwrap();
        assert!(!m.allow_empty);
        assert_eq!(m.check_grammar(), Ok(()));
    }

    #[test]
    fn every_field_outside_the_grammar_is_refused_by_name() {
        let key = SigningKey::generate().unwrap();
        assert_eq!(sample(&key).check_grammar(), Ok(()));
        let id_number = "110101199003071234";
        type Edit = Box<dyn Fn(&mut Manifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("format", Box::new(|m| m.format = 1)),
            ("format", Box::new(|m| m.format = 4)),
            (
                "allow_empty",
                Box::new(|m| {
                    m.format = 2;
                    m.allow_empty = true
                }),
            ),
            ("partner", Box::new(|m| m.partner = "Hospital".into())),
            ("partner", Box::new(|m| m.partner = "医院".into())),
            ("dataset", Box::new(|m| m.dataset = "../visits".into())),
            ("dataset", Box::new(|m| m.dataset = "v".repeat(65))),
            ("sequence", Box::new(|m| m.sequence = 0)),
            ("sequence", Box::new(|m| m.sequence = 1 << 63)),
            ("sequence", Box::new(|m| m.sequence = u64::MAX)),
            (
                "created_at",
                Box::new(move |m| m.created_at = id_number.into()),
            ),
            (
                "created_at",
                Box::new(|m| m.created_at = "2026-11-30T08:00:00+08:00".into()),
            ),
            (
                "created_at",
                Box::new(|m| m.created_at = "2026-11-30T00:00:00.123Z".into()),
            ),
            (
                "created_at",
                Box::new(|m| m.created_at = "2026-02-30T00:00:00Z".into()),
            ),
            (
                "created_at",
                Box::new(|m| m.created_at = "2026-11-30T00:00:00Z 13800138000".into()),
            ),
            (
                "file_name",
                Box::new(|m| m.file_name = "hospital.visits.00000002.parquet".into()),
            ),
            (
                "file_name",
                Box::new(|m| m.file_name = "../../catalog.sqlite".into()),
            ),
            ("file_sha256", Box::new(|m| m.file_sha256 = "A".repeat(64))),
            ("file_sha256", Box::new(|m| m.file_sha256 = "0".repeat(63))),
            (
                "schema_digest",
                Box::new(move |m| m.schema_digest = id_number.into()),
            ),
            ("file_bytes", Box::new(|m| m.file_bytes = 0)),
            (
                "tokens.key_id",
                Box::new(move |m| m.tokens.key_id = KeyId::from_public_name(id_number)),
            ),
            (
                "platform_key_id",
                Box::new(|m| m.platform_key_id = KeyId::from_public_name("k")),
            ),
            (
                "partner_key_id",
                Box::new(|m| m.partner_key_id = KeyId::from_public_name("张三")),
            ),
            ("columns", Box::new(|m| m.columns[1].name = "D d".into())),
            (
                "rejected_rows",
                Box::new(move |m| {
                    m.rejected_rows = BTreeMap::from([(id_number.into(), 2)]);
                }),
            ),
            (
                "rejected_rows",
                Box::new(move |m| {
                    m.rejected_rows = BTreeMap::from([(format!("id_number:{id_number}"), 2)]);
                }),
            ),
            (
                "rejected_rows",
                Box::new(move |m| {
                    m.rejected_rows = BTreeMap::from([(format!("{id_number}:blank"), 2)]);
                }),
            ),
            (
                "rejected_rows",
                Box::new(|m| {
                    m.rejected_rows = BTreeMap::from([("id_number:blank".into(), 0)]);
                    m.input_rows = 1;
                }),
            ),
            (
                "rejected_rows",
                Box::new(|m| {
                    m.rejected_rows =
                        BTreeMap::from([("a:blank".into(), u64::MAX), ("b:blank".into(), 2)]);
                }),
            ),
            ("input_rows", Box::new(|m| m.input_rows = 4)),
            ("input_rows", Box::new(|m| m.row_count = u64::MAX)),
            (
                "token_counts",
                Box::new(|m| {
                    m.token_counts.insert("person".into(), 2);
                }),
            ),
        ];
        for (expected, edit) in cases {
            let mut m = sample(&key);
            edit(&mut m);
            let e = m.check_grammar().unwrap_err();
            assert_eq!(e.field, expected, "{e}");
            // The refusal names the rule, never the value.
            assert!(!e.to_string().contains("1101011990"), "{e}");
        }
    }

    #[test]
    fn created_at_takes_exactly_one_form() {
        // Every one-character change of a valid time either is another valid time in the
        // same form or is refused: no other spelling gets through.
        let valid = "2026-11-30T08:15:00Z";
        assert!(is_utc_seconds(valid));
        let alphabet = [
            '0', '1', '3', '9', ':', '-', 'T', 'Z', ' ', '.', '+', 'z', '１', '٣',
        ];
        for i in 0..valid.len() {
            for c in alphabet {
                for insert in [false, true] {
                    let mut v: Vec<char> = valid.chars().collect();
                    if insert {
                        v.insert(i, c);
                    } else {
                        v[i] = c;
                    }
                    let text: String = v.into_iter().collect();
                    let reparsed =
                        chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%SZ")
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
                    assert_eq!(
                        is_utc_seconds(&text),
                        reparsed.as_deref() == Ok(text.as_str())
                            && text.starts_with(|c: char| c.is_ascii_digit())
                            && text.len() == valid.len(),
                        "{text}"
                    );
                    if text.chars().count() != valid.len() || !text.is_ascii() {
                        assert!(!is_utc_seconds(&text), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_rejection_codes_are_the_sealers() {
        use blindwatch_common::NormaliseError as N;
        use blindwatch_common::idcard::IdCardError as I;
        let produced = [
            N::Blank,
            N::IdCard(I::Length),
            N::IdCard(I::Character),
            N::IdCard(I::BirthDate),
            N::IdCard(I::CheckDigit),
            N::Phone,
            N::Plate,
            N::ControlCharacter,
            N::TooLong { max: 1 },
        ];
        let codes: Vec<&str> = produced.iter().map(N::reason_code).collect();
        assert_eq!(codes, IDENTIFIER_REJECTIONS);
        assert!(is_rejection_code("bad_date", false) && !is_rejection_code("bad_date", true));
    }
}
