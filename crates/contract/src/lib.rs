//! Dataset contracts (`policies/datasets/<partner>.<dataset>.toml`), owned by the partner.
//!
//! A contract lists every column of the partner's export with its type and role:
//! - `identifier` (with a `kind`): normalised, validated and tokenised before sealing; the
//!   raw value is dropped unless `reveal = true` keeps it (encrypted) for justified reveals;
//! - `attribute`: sealed as typed data, usable only as its `uses` allow;
//! - `drop`: never leaves the partner.
//!
//! Uses follow SCQL's column control list: `join`, `filter`, `group`, `aggregate`, `reveal`.
//! `purposes` restricts all of a column's uses to the listed purposes; `use_purposes`
//! restricts single uses further.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use blindwatch_common::IdentifierKind;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Utf8,
    Int64,
    Float64,
    Bool,
    Date,
    Timestamp,
}

impl ColumnType {
    /// The type the sealed file stores attributes of this type as.
    pub fn sealed(self) -> SealedType {
        match self {
            ColumnType::Utf8 => SealedType::Utf8,
            ColumnType::Int64 => SealedType::Int64,
            ColumnType::Float64 => SealedType::Float64,
            ColumnType::Bool => SealedType::Boolean,
            ColumnType::Date => SealedType::Date32,
            ColumnType::Timestamp => SealedType::Timestamp,
        }
    }
}

/// The type of a sealed column: the one list the partner writes, the manifest carries and
/// the engine reads. Serialised as Arrow prints the type (`Utf8`, `FixedSizeBinary(16)`,
/// ...), so signed manifests and their schema digests read as they always did; a name not
/// in the list does not parse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SealedType {
    /// 16-byte identifier tokens.
    #[serde(rename = "FixedSizeBinary(16)")]
    Token,
    Utf8,
    Int64,
    Float64,
    Boolean,
    Date32,
    /// Seconds since the epoch, no time zone.
    #[serde(rename = "Timestamp(Second, None)")]
    Timestamp,
}

impl SealedType {
    /// Bytes of a token.
    pub const TOKEN_LEN: usize = 16;

    /// The type's name as the manifest writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            SealedType::Token => "FixedSizeBinary(16)",
            SealedType::Utf8 => "Utf8",
            SealedType::Int64 => "Int64",
            SealedType::Float64 => "Float64",
            SealedType::Boolean => "Boolean",
            SealedType::Date32 => "Date32",
            SealedType::Timestamp => "Timestamp(Second, None)",
        }
    }
}

impl SealedType {
    /// The Arrow type the sealed file stores the column as.
    pub fn arrow_type(self) -> DataType {
        match self {
            SealedType::Token => DataType::FixedSizeBinary(SealedType::TOKEN_LEN as i32),
            SealedType::Utf8 => DataType::Utf8,
            SealedType::Int64 => DataType::Int64,
            SealedType::Float64 => DataType::Float64,
            SealedType::Boolean => DataType::Boolean,
            SealedType::Date32 => DataType::Date32,
            SealedType::Timestamp => DataType::Timestamp(TimeUnit::Second, None),
        }
    }
}

impl std::fmt::Display for SealedType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    pub data_type: SealedType,
    #[serde(flatten)]
    pub content: SealedContent,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Identifier,
    Attribute,
    Drop,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Use {
    Join,
    Filter,
    Group,
    Aggregate,
    Reveal,
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Use::Join => "join",
            Use::Filter => "filter",
            Use::Group => "group",
            Use::Aggregate => "aggregate",
            Use::Reveal => "reveal",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each contribution adds rows.
    #[default]
    Append,
    /// Each contribution replaces the dataset.
    Replace,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    pub role: Role,
    /// Identifier kind (identifiers only).
    #[serde(default)]
    pub kind: Option<IdentifierKind>,
    /// Name of the token column (identifiers only; default: the kind, e.g. `person`).
    #[serde(default)]
    pub token: Option<String>,
    /// Keep the normalised identifier, encrypted, for justified reveals (identifiers only).
    #[serde(default)]
    pub reveal: bool,
    /// A blank or invalid value rejects the row (default); otherwise it becomes null.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub uses: BTreeSet<Use>,
    /// If set, every use of this column is limited to these purposes.
    #[serde(default)]
    pub purposes: BTreeSet<String>,
    /// Per-use purpose limits, on top of `purposes`.
    #[serde(default)]
    pub use_purposes: BTreeMap<Use, BTreeSet<String>>,
    /// Clipping bounds `[low, high]` of a numeric attribute: before a released sum or
    /// average, every value is clamped into them, which bounds what one person can add.
    #[serde(default)]
    pub bounds: Option<[f64; 2]>,
    /// How coarse any value derived from this column must be when a model shows it to an
    /// officer as evidence (a date or timestamp attribute): `{ within_days = [1, 7, 30] }`.
    #[serde(default)]
    pub reveal_as: Option<RevealAs>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The granularity at which values derived from a column may reach an officer: "within N
/// days" of the run's day, for the listed bounds (ascending); beyond the largest, only "more
/// than N days". A model shows such a value with the same bounds or a subset of them
/// (coarser), never finer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevealAs {
    pub within_days: Vec<u32>,
}

/// Most bounds a `reveal_as` may list, and the largest bound (100 years).
pub const MAX_DAY_BOUNDS: usize = 16;
pub const MAX_DAYS: u32 = 36_500;

impl RevealAs {
    /// Why the bounds are unusable, if they are: 1 to 16 whole days, ascending, at most 36500.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.within_days;
        if d.is_empty() || d.len() > MAX_DAY_BOUNDS {
            return Err(format!(
                "`within_days` lists 1 to {MAX_DAY_BOUNDS} day bounds, e.g. [1, 7, 30, 90]"
            ));
        }
        if d[0] == 0 || d.windows(2).any(|w| w[0] >= w[1]) || d.iter().any(|n| *n > MAX_DAYS) {
            return Err(format!(
                "`within_days` bounds are whole days from 1 to {MAX_DAYS}, strictly ascending"
            ));
        }
        Ok(())
    }

    /// Whether these buckets are the same as or coarser than `allowed`: every bound is one
    /// of `allowed`'s, so each bucket is a union of allowed buckets.
    pub fn within(&self, allowed: &RevealAs) -> bool {
        !self.within_days.is_empty()
            && self
                .within_days
                .iter()
                .all(|n| allowed.within_days.contains(n))
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub partner: String,
    pub dataset: String,
    #[serde(default)]
    pub mode: Mode,
    /// Days a contribution is kept (retention); none means until replaced.
    #[serde(default)]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
    /// The protected entity of the rows: which people a row is about.
    pub privacy_unit: PrivacyUnit,
    pub columns: Vec<Column>,
}

/// The people a row is about, and how much one of them may contribute to a released answer.
///
/// A row's *owner* is the first of `columns` (person or phone token columns, by sealed
/// name) that is not null; a row that names nobody is a unit of its own. Every released answer counts
/// owners (k applies to them) and bounds each owner's contribution: at most `max_rows` rows
/// in all, however they spread over the answer's groups, and a say in the release of at
/// most `max_groups` groups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyUnit {
    pub columns: Vec<String>,
    pub max_rows: u32,
    #[serde(default = "one")]
    pub max_groups: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("contract {path} is not valid TOML of the contract format: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("contract {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no contract for dataset `{0}`: add policies/datasets/{0}.toml")]
    Unknown(String),
}

/// A name usable as a partner, dataset or column: lower-case ASCII letters, digits, `_`, `-`.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && s.as_bytes()[0].is_ascii_lowercase()
}

impl Contract {
    pub fn parse(text: &str, path: &Path) -> Result<Contract, ContractError> {
        let contract: Contract = toml::from_str(text).map_err(|e| ContractError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        contract
            .validate()
            .map_err(|message| ContractError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        Ok(contract)
    }

    pub fn load(path: &Path) -> Result<Contract, ContractError> {
        let text = std::fs::read_to_string(path).map_err(|source| ContractError::Read {
            path: path.to_owned(),
            source,
        })?;
        Contract::parse(&text, path)
    }

    /// `<partner>.<dataset>`.
    pub fn table_name(&self) -> String {
        format!("{}.{}", self.partner, self.dataset)
    }

    fn validate(&self) -> Result<(), String> {
        for (what, name) in [("partner", &self.partner), ("dataset", &self.dataset)] {
            if !is_plain_name(name) {
                return Err(format!(
                    "{what} `{name}` must be lower-case letters, digits, `_` or `-`"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.as_str()) {
                return Err(format!("column `{}` is declared twice", c.name));
            }
            let bad = |m: &str| Err(format!("column `{}`: {m}", c.name));
            match c.role {
                Role::Identifier => {
                    if c.kind.is_none() {
                        return bad(
                            "an identifier needs `kind` (person, phone, address, plate or name)",
                        );
                    }
                    if c.column_type != ColumnType::Utf8 {
                        return bad("an identifier is read as text: use type = \"utf8\"");
                    }
                    if let Some(u) = c
                        .uses
                        .iter()
                        .find(|u| !matches!(u, Use::Join | Use::Aggregate))
                    {
                        return bad(&format!(
                            "a token may only be used to join or to count distinct, not `{u}`"
                        ));
                    }
                }
                Role::Attribute | Role::Drop => {
                    if c.kind.is_some() || c.token.is_some() || c.reveal {
                        return bad("`kind`, `token` and `reveal` belong to identifiers only");
                    }
                    if c.role == Role::Drop && !c.uses.is_empty() {
                        return bad("a dropped column cannot have uses");
                    }
                }
            }
            for u in c.use_purposes.keys() {
                if !c.uses.contains(u) {
                    return bad(&format!(
                        "`use_purposes` limits `{u}`, which is not in `uses`"
                    ));
                }
            }
        }
        for col in self.sealed_columns() {
            if !is_plain_name(&col.name) {
                return Err(format!(
                    "sealed column name `{}` must be lower-case letters, digits, `_` or `-`",
                    col.name
                ));
            }
        }
        let mut out_names = BTreeSet::new();
        for col in self.sealed_columns() {
            if !out_names.insert(col.name.clone()) {
                return Err(format!(
                    "two sealed columns would be named `{}`: set `token` on an identifier",
                    col.name
                ));
            }
        }
        if out_names.is_empty() {
            return Err("the contract seals no column".into());
        }
        self.validate_privacy_unit()?;
        for c in &self.columns {
            if let Some(r) = &c.reveal_as {
                if c.role != Role::Attribute
                    || !matches!(c.column_type, ColumnType::Date | ColumnType::Timestamp)
                {
                    return Err(format!(
                        "column `{}`: `reveal_as` belongs to date and timestamp attributes only",
                        c.name
                    ));
                }
                r.validate()
                    .map_err(|m| format!("column `{}`: reveal_as: {m}", c.name))?;
            }
        }
        for c in &self.columns {
            if let Some([low, high]) = c.bounds {
                let numeric = matches!(c.column_type, ColumnType::Int64 | ColumnType::Float64);
                if c.role != Role::Attribute || !numeric {
                    return Err(format!(
                        "column `{}`: `bounds` belong to numeric attributes only",
                        c.name
                    ));
                }
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(format!(
                        "column `{}`: `bounds` must be two finite numbers, the lower first",
                        c.name
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_privacy_unit(&self) -> Result<(), String> {
        let unit = &self.privacy_unit;
        let mut seen = BTreeSet::new();
        for name in &unit.columns {
            // A phone stands for the person who uses it, when no ID number is known.
            let person_token = self.columns.iter().any(|c| {
                c.role == Role::Identifier
                    && matches!(c.kind, Some(IdentifierKind::Person | IdentifierKind::Phone))
                    && c.token_name() == name
            });
            if !person_token {
                return Err(format!(
                    "privacy_unit: `{name}` is not the token column of a person or phone identifier of this contract"
                ));
            }
            if !seen.insert(name) {
                return Err(format!("privacy_unit: `{name}` is listed twice"));
            }
        }
        if !(1..=10_000).contains(&unit.max_rows) || !(1..=1_000).contains(&unit.max_groups) {
            return Err(
                "privacy_unit: max_rows must be 1 to 10000 and max_groups 1 to 1000".into(),
            );
        }
        Ok(())
    }

    /// The column of the sealed table with this name (a token column is found by its token name).
    pub fn sealed_column(&self, sealed_name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| match c.role {
            Role::Identifier => {
                c.token_name() == sealed_name || (c.reveal && c.name == sealed_name)
            }
            Role::Attribute => c.name == sealed_name,
            Role::Drop => false,
        })
    }

    /// The schema of the sealed file, in order: for each identifier its token column (and
    /// the revealable value if marked), for each attribute the typed column.
    pub fn sealed_columns(&self) -> Vec<SealedColumn> {
        let mut out = Vec::new();
        for c in &self.columns {
            match (c.role, c.kind) {
                (Role::Identifier, Some(kind)) => {
                    out.push(SealedColumn {
                        name: c.token_name().to_owned(),
                        data_type: SealedType::Token,
                        content: SealedContent::Token { kind },
                    });
                    if c.reveal {
                        out.push(SealedColumn {
                            name: c.name.clone(),
                            data_type: SealedType::Utf8,
                            content: SealedContent::RevealableIdentifier { kind },
                        });
                    }
                }
                (Role::Attribute, _) => out.push(SealedColumn {
                    name: c.name.clone(),
                    data_type: c.column_type.sealed(),
                    content: SealedContent::Attribute,
                }),
                _ => {}
            }
        }
        out
    }

    /// The Arrow schema of the sealed file (what the partner writes and the engine reads;
    /// never inferred from a file).
    pub fn sealed_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .sealed_columns()
            .into_iter()
            .map(|c| Field::new(c.name, c.data_type.arrow_type(), true))
            .collect();
        std::sync::Arc::new(Schema::new(fields))
    }

    /// The uses this column allows for `purpose`.
    pub fn allowed_uses(&self, sealed_name: &str, purpose: &str) -> BTreeSet<Use> {
        let Some(col) = self.sealed_column(sealed_name) else {
            return BTreeSet::new();
        };
        col.uses
            .iter()
            .copied()
            .filter(|u| col.allows(*u, purpose))
            .collect()
    }
}

impl Column {
    pub fn token_name(&self) -> &str {
        self.token
            .as_deref()
            .or(self.kind.map(IdentifierKind::as_str))
            .unwrap_or(&self.name)
    }

    pub fn allows(&self, u: Use, purpose: &str) -> bool {
        self.uses.contains(&u)
            && (self.purposes.is_empty() || self.purposes.contains(purpose))
            && self
                .use_purposes
                .get(&u)
                .is_none_or(|p| p.contains(purpose))
    }
}

/// Every contract of a deployment, by table name.
#[derive(Debug, Clone, Default)]
pub struct ContractSet {
    contracts: BTreeMap<String, Contract>,
}

impl ContractSet {
    /// Loads every `*.toml` in `dir`; each file must be named `<partner>.<dataset>.toml`.
    pub fn load_dir(dir: &Path) -> Result<ContractSet, ContractError> {
        let entries = std::fs::read_dir(dir).map_err(|source| ContractError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut set = ContractSet::default();
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let contract = Contract::load(&path)?;
            let expected = format!("{}.toml", contract.table_name());
            if path.file_name().and_then(|n| n.to_str()) != Some(expected.as_str()) {
                return Err(ContractError::Invalid {
                    path,
                    message: format!(
                        "a contract for {} must be named {expected}",
                        contract.table_name()
                    ),
                });
            }
            set.contracts.insert(contract.table_name(), contract);
        }
        Ok(set)
    }

    pub fn from_contracts(contracts: impl IntoIterator<Item = Contract>) -> ContractSet {
        ContractSet {
            contracts: contracts.into_iter().map(|c| (c.table_name(), c)).collect(),
        }
    }

    pub fn get(&self, table: &str) -> Result<&Contract, ContractError> {
        self.contracts
            .get(table)
            .ok_or_else(|| ContractError::Unknown(table.to_owned()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Contract> {
        self.contracts.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VISITS: &str = r#"
partner = "hospital"
dataset = "visits"
privacy_unit = { columns = ["person"], max_rows = 10 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", uses = ["join"] },
  { name = "patient_name", type = "utf8", role = "drop" },
  { name = "visit_date", type = "date", role = "attribute", uses = ["filter", "aggregate", "reveal"], use_purposes = { reveal = ["fugitive-tracking"] } },
  { name = "department", type = "utf8", role = "attribute", uses = ["filter", "group"], purposes = ["mental-health-care", "fugitive-tracking"] },
]
"#;

    #[test]
    fn sealed_types_are_one_closed_list() {
        let all = [
            SealedType::Token,
            SealedType::Utf8,
            SealedType::Int64,
            SealedType::Float64,
            SealedType::Boolean,
            SealedType::Date32,
            SealedType::Timestamp,
        ];
        for t in all {
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, t.as_str(), "serialised as its manifest name");
            assert_eq!(serde_json::from_value::<SealedType>(json).unwrap(), t);
        }
        // A name outside the list (another Arrow type, a different spelling) does not parse:
        // nobody downstream guesses a type for it.
        for unknown in ["LargeUtf8", "utf8", "FixedSizeBinary(32)", "Timestamp", ""] {
            assert!(serde_json::from_value::<SealedType>(unknown.into()).is_err());
        }
        let unknown_column = VISITS.replace("type = \"date\"", "type = \"datetime\"");
        assert_ne!(unknown_column, VISITS, "the fixture declares a date column");
        assert!(Contract::parse(&unknown_column, Path::new("v.toml")).is_err());
    }

    #[test]
    fn sealed_schema_and_uses() {
        let c = Contract::parse(VISITS, Path::new("v.toml")).unwrap();
        let names: Vec<_> = c
            .sealed_columns()
            .into_iter()
            .map(|c| (c.name, serde_json::to_value(c.data_type).unwrap()))
            .collect();
        // The manifest's names for the types: signed manifests keep their schema digests.
        assert_eq!(
            names,
            [
                ("person".to_string(), "FixedSizeBinary(16)".into()),
                ("visit_date".into(), "Date32".into()),
                ("department".into(), "Utf8".into())
            ]
        );
        assert!(c.allowed_uses("visit_date", "x").contains(&Use::Filter));
        assert!(!c.allowed_uses("visit_date", "x").contains(&Use::Reveal));
        assert!(
            c.allowed_uses("visit_date", "fugitive-tracking")
                .contains(&Use::Reveal)
        );
        assert!(c.allowed_uses("department", "traffic").is_empty());
        assert!(
            c.allowed_uses("patient_name", "fugitive-tracking")
                .is_empty()
        );
        assert_eq!(c.allowed_uses("person", "any"), BTreeSet::from([Use::Join]));
    }

    #[test]
    fn reveal_as_is_met_by_the_same_or_coarser_bounds_only() {
        let text = VISITS.replace(
            "use_purposes = { reveal",
            "reveal_as = { within_days = [1, 7, 30, 90] }, use_purposes = { reveal",
        );
        let c = Contract::parse(&text, Path::new("v.toml")).unwrap();
        let allowed = c
            .sealed_column("visit_date")
            .unwrap()
            .reveal_as
            .clone()
            .unwrap();
        let r = |d: &[u32]| RevealAs {
            within_days: d.to_vec(),
        };
        assert!(r(&[1, 7, 30, 90]).within(&allowed));
        assert!(r(&[7, 90]).within(&allowed));
        assert!(!r(&[1, 7, 14]).within(&allowed), "14 splits a bucket");
        assert!(!r(&[1, 7, 30, 90, 180]).within(&allowed), "a finer tail");
        assert!(!r(&[]).within(&allowed));
    }

    #[test]
    fn invalid_contracts_are_refused_with_the_column() {
        for (text, needle) in [
            (VISITS.replace("kind = \"person\", ", ""), "needs `kind`"),
            (
                VISITS.replace("uses = [\"join\"]", "uses = [\"group\"]"),
                "only be used to join",
            ),
            (
                VISITS.replace(
                    "\"patient_name\", type = \"utf8\", role = \"drop\"",
                    "\"department\", type = \"utf8\", role = \"drop\"",
                ),
                "declared twice",
            ),
            (VISITS.replace("hospital", "Hospital!"), "lower-case"),
            (VISITS.replace("reveal = [", "group = ["), "not in `uses`"),
            (
                VISITS.replace("columns = [\"person\"]", "columns = [\"visit_date\"]"),
                "privacy_unit: `visit_date`",
            ),
            (
                VISITS.replace("max_rows = 10", "max_rows = 0"),
                "max_rows must be",
            ),
            (
                VISITS.replace(
                    "role = \"drop\" }",
                    "role = \"drop\", bounds = [0.0, 1.0] }",
                ),
                "numeric attributes only",
            ),
            (
                VISITS.replace(
                    "role = \"drop\" }",
                    "role = \"drop\", reveal_as = { within_days = [7] } }",
                ),
                "date and timestamp attributes only",
            ),
            (
                VISITS.replace(
                    "use_purposes = { reveal",
                    "reveal_as = { within_days = [7, 7] }, use_purposes = { reveal",
                ),
                "strictly ascending",
            ),
            (
                VISITS.replace(
                    "use_purposes = { reveal",
                    "reveal_as = { within_days = [] }, use_purposes = { reveal",
                ),
                "1 to 16 day bounds",
            ),
        ] {
            let err = Contract::parse(&text, Path::new("v.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn shipped_contracts_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets");
        let set = ContractSet::load_dir(&dir).unwrap();
        let names: Vec<_> = set.iter().map(Contract::table_name).collect();
        assert_eq!(
            names,
            [
                "hospital.visits",
                "insurance.claims",
                "police.incidents",
                "police.mental_health_registry",
                "police.wanted",
                "tax.employment"
            ]
        );
    }
}
