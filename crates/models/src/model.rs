//! The model file format.
//!
//! ```toml
//! id = "fugitive-medical"            # lowercase, digits, `-`
//! version = 1
//! title = { zh = "在逃人员就医预警", en = "Wanted person seen in medical data" }
//! category = "fugitive"              # dispute | mental-health | fugitive | public-order | fraud | other
//! purpose = "fugitive-tracking"      # checked against the contracts' purposes
//! subject = "person"                 # the identifier kind of the `subject` column
//! route = "station"                  # the result column naming the responsible station
//! schedule = "1h"                    # how often it runs (s, m, h, d)
//! keep_for = 2                       # runs a lower tier must hold before the alert follows
//! evidence = ["days_since_seen"]     # features an alert shows (aggregates only)
//! # how coarse an evidence feature is shown: "within N days" buckets (dates: days before the
//! # run's day; integers: a day count). Required, at least as coarse as the contract's, for
//! # evidence derived from a column whose contract declares `reveal_as`.
//! reveal_as = { days_since_seen = { within_days = [1, 7, 30, 90] } }
//! query = "SELECT ... AS subject, ... AS station, ... GROUP BY ..."
//! tiers = [                          # highest first; the first that holds wins
//!   { level = "red", when = "days_since_seen <= 1", why = "..." },
//! ]
//! ```
//!
//! **Digest.** A partner approves one exact model: [`Model::digest`] is the SHA-256 of the
//! model's canonical form, the compact JSON of every parsed field in a fixed order (see
//! [`Canonical`]): id, version, titles, category, purpose, subject, route, schedule in
//! seconds, keep_for, evidence, reveal_as, description, query (byte for byte) and each tier's
//! level, condition and reason. Comments, whitespace between fields and key order in the file
//! do not change it; any changed value does, and needs a new approval.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use blindwatch_alerts::{Tier, parse_tier, tier_rank};
use blindwatch_audit::{ModelId, Purpose, Sha256Digest};
use blindwatch_common::IdentifierKind;
use blindwatch_contract::RevealAs;

/// The result column holding the subject's token.
pub const SUBJECT_COLUMN: &str = "subject";

/// A refusal: the file, the field and what is wrong (and what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub struct ModelError {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

impl ModelError {
    pub fn new(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> ModelError {
        ModelError {
            file: file.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Warning categories (分类): what kind of harm a model looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Dispute,
    MentalHealth,
    Fugitive,
    PublicOrder,
    Fraud,
    Other,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Dispute => "dispute",
            Category::MentalHealth => "mental-health",
            Category::Fugitive => "fugitive",
            Category::PublicOrder => "public-order",
            Category::Fraud => "fraud",
            Category::Other => "other",
        }
    }
    pub fn zh(self) -> &'static str {
        match self {
            Category::Dispute => "矛盾纠纷",
            Category::MentalHealth => "精神卫生",
            Category::Fugitive => "追逃",
            Category::PublicOrder => "治安",
            Category::Fraud => "诈骗",
            Category::Other => "其他",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Title {
    pub zh: String,
    pub en: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    level: String,
    when: String,
    #[serde(default)]
    why: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    version: u32,
    title: Title,
    category: Category,
    purpose: String,
    subject: IdentifierKind,
    route: String,
    schedule: String,
    #[serde(default = "one")]
    keep_for: u32,
    evidence: Vec<String>,
    #[serde(default)]
    reveal_as: BTreeMap<String, RevealAs>,
    #[serde(default)]
    description: Option<String>,
    query: String,
    tiers: Vec<RawTier>,
}

fn one() -> u32 {
    1
}

/// One tier's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    pub level: Tier,
    /// A SQL boolean expression over the query's result columns.
    pub when: String,
    /// Why the threshold is where it is.
    pub why: Option<String>,
}

/// A parsed, field-checked model.
#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    pub version: u32,
    pub title: Title,
    pub category: Category,
    pub purpose: Purpose,
    pub subject: IdentifierKind,
    pub route: String,
    pub schedule: std::time::Duration,
    pub keep_for: u32,
    pub evidence: Vec<String>,
    /// Evidence features shown only as "within N days" buckets.
    pub reveal_as: BTreeMap<String, RevealAs>,
    pub description: Option<String>,
    pub query: String,
    pub tiers: Vec<TierRule>,
    /// Where it was read from (for messages).
    pub file: PathBuf,
}

/// The canonical form a model's digest is computed over: every parsed field, in this order,
/// as compact JSON (`serde_json` writes struct fields in declaration order and escapes
/// strings one way only). `format` names this layout; a new layout gets a new name.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    format: &'static str,
    id: &'a str,
    version: u32,
    title: &'a Title,
    category: Category,
    purpose: &'a str,
    subject: &'a str,
    route: &'a str,
    schedule_seconds: u64,
    keep_for: u32,
    evidence: &'a [String],
    reveal_as: &'a BTreeMap<String, RevealAs>,
    description: Option<&'a str>,
    query: &'a str,
    tiers: Vec<CanonicalTier<'a>>,
}

// Strings, integers and string-keyed maps only.
impl blindwatch_crypto::PlainJson for Canonical<'_> {}

#[derive(serde::Serialize)]
struct CanonicalTier<'a> {
    level: &'static str,
    when: &'a str,
    why: Option<&'a str>,
}

/// The name of the canonical layout, part of what is digested.
pub const CANONICAL_FORMAT: &str = "blindwatch-model/1";

fn parse_schedule(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

fn is_column_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Model {
    /// Parses a model file's text, checking every field that can be checked without the
    /// catalog. All problems are reported, not just the first.
    pub fn parse(text: &str, file: &Path) -> Result<Model, Vec<ModelError>> {
        let raw: RawModel = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!("line {line}")
                })
                .unwrap_or_else(|| "file".into());
            vec![ModelError::new(file, field, e.message().to_owned())]
        })?;
        let mut errors = Vec::new();
        let mut err =
            |field: &str, reason: String| errors.push(ModelError::new(file, field, reason));

        if ModelId::new(&raw.id).is_err()
            || !raw
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            err(
                "id",
                "use 1-64 lowercase letters, digits and `-` (it names the model in alerts and the audit log)".into(),
            );
        }
        if let Some(stem) = file.file_stem().and_then(|s| s.to_str())
            && stem != raw.id
        {
            err(
                "id",
                format!(
                    "the file is named `{stem}.toml` but the id is `{}`: name the file after the id",
                    raw.id
                ),
            );
        }
        if raw.version == 0 {
            err(
                "version",
                "versions start at 1; raise it with every change".into(),
            );
        }
        if raw.title.zh.trim().is_empty() || raw.title.en.trim().is_empty() {
            err(
                "title",
                "give both a Chinese (`zh`) and an English (`en`) title".into(),
            );
        }
        let purpose = Purpose::new(raw.purpose.as_str()).ok();
        if purpose.is_none() {
            err(
                "purpose",
                "name the purpose the model serves, as the dataset contracts list it (lowercase letters, digits and `-`)".into(),
            );
        }
        if !is_column_name(&raw.route) || raw.route == SUBJECT_COLUMN {
            err(
                "route",
                "name the result column that holds the responsible station (lowercase, not `subject`)".into(),
            );
        }
        let schedule = parse_schedule(&raw.schedule);
        if schedule.is_none() {
            err(
                "schedule",
                "write a positive period such as `15m`, `1h` or `1d`".into(),
            );
        }
        if raw.keep_for == 0 {
            err(
                "keep_for",
                "at least 1 (a lower tier takes effect after that many runs)".into(),
            );
        }
        if raw.evidence.is_empty() {
            err(
                "evidence",
                "declare at least one feature an officer sees on the alert".into(),
            );
        }
        for (name, r) in &raw.reveal_as {
            if !raw.evidence.contains(name) {
                err(
                    "reveal_as",
                    format!(
                        "`{name}` is not listed in `evidence`: reveal_as says how an evidence feature is shown"
                    ),
                );
            }
            if let Err(m) = r.validate() {
                err("reveal_as", format!("`{name}`: {m}"));
            }
        }
        let mut seen = BTreeSet::new();
        for e in &raw.evidence {
            if !seen.insert(e) {
                err("evidence", format!("`{e}` is listed twice"));
            }
            if e == SUBJECT_COLUMN || *e == raw.route {
                err(
                    "evidence",
                    format!("`{e}` is the subject or the route, not a feature"),
                );
            }
        }
        if raw.query.trim().is_empty() {
            err(
                "query",
                "write one SQL query that yields one row per subject".into(),
            );
        }
        let mut tiers = Vec::new();
        if raw.tiers.is_empty() {
            err(
                "tiers",
                "define at least one tier (red, orange, yellow, blue)".into(),
            );
        }
        let mut last_rank = u8::MAX;
        for (i, t) in raw.tiers.iter().enumerate() {
            let field = format!("tiers[{i}]");
            match parse_tier(&t.level) {
                None => err(
                    &field,
                    format!(
                        "level `{}` is not one of red, orange, yellow, blue",
                        t.level
                    ),
                ),
                Some(level) => {
                    if tier_rank(level) >= last_rank {
                        err(
                            &field,
                            "list tiers from highest to lowest (red, orange, yellow, blue), each at most once".into(),
                        );
                    }
                    last_rank = tier_rank(level);
                    if t.when.trim().is_empty() {
                        err(
                            &format!("{field}.when"),
                            "write a SQL boolean condition".into(),
                        );
                    }
                    tiers.push(TierRule {
                        level,
                        when: t.when.clone(),
                        why: t.why.clone(),
                    });
                }
            }
        }
        // A schedule or a purpose that does not parse is one of the errors.
        let (Some(schedule), Some(purpose), true) = (schedule, purpose, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Model {
            id: raw.id,
            version: raw.version,
            title: raw.title,
            category: raw.category,
            purpose,
            subject: raw.subject,
            route: raw.route,
            schedule,
            keep_for: raw.keep_for,
            evidence: raw.evidence,
            reveal_as: raw.reveal_as,
            description: raw.description,
            query: raw.query,
            tiers,
            file: file.to_owned(),
        })
    }

    /// The digest a partner's approval signs: SHA-256 of the canonical form (module docs).
    pub fn digest(&self) -> Sha256Digest {
        let canonical = Canonical {
            format: CANONICAL_FORMAT,
            id: &self.id,
            version: self.version,
            title: &self.title,
            category: self.category,
            purpose: self.purpose.as_str(),
            subject: self.subject.as_str(),
            route: &self.route,
            schedule_seconds: self.schedule.as_secs(),
            keep_for: self.keep_for,
            evidence: &self.evidence,
            reveal_as: &self.reveal_as,
            description: self.description.as_deref(),
            query: &self.query,
            tiers: self
                .tiers
                .iter()
                .map(|t| CanonicalTier {
                    level: blindwatch_alerts::tier_name(t.level),
                    when: &t.when,
                    why: t.why.as_deref(),
                })
                .collect(),
        };
        Sha256Digest::of(&blindwatch_crypto::plain_json(&canonical))
    }

    /// Parses a model received as text (a request body); messages name it `<id>.toml`, as
    /// its file would be named.
    pub fn parse_posted(text: &str) -> Result<Model, Vec<ModelError>> {
        let id = toml::from_str::<toml::Table>(text)
            .ok()
            .and_then(|t| t.get("id").and_then(|v| v.as_str()).map(str::to_owned))
            .filter(|id| is_column_name(&id.replace('-', "_")));
        let file = PathBuf::from(format!("{}.toml", id.as_deref().unwrap_or("model")));
        Model::parse(text, &file)
    }

    /// Reads and parses a model file.
    pub fn load(path: &Path) -> Result<Model, Vec<ModelError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ModelError::new(
                path,
                "file",
                format!("cannot read it: {e}"),
            )]
        })?;
        Model::parse(&text, path)
    }
}

/// Every `*.toml` model in `dir` (not the `*.test.toml` fixtures), sorted by id.
pub fn load_dir(dir: &Path) -> Result<Vec<Model>, Vec<ModelError>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![ModelError::new(
            dir,
            "directory",
            format!("cannot read it: {e}"),
        )]
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && !p.to_string_lossy().ends_with(".test.toml")
        })
        .collect();
    paths.sort();
    let mut models = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match Model::load(&p) {
            Ok(m) => models.push(m),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(models)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "m"
version = 1
title = { zh = "测试", en = "Test" }
category = "fugitive"
purpose = "fugitive-tracking"
subject = "person"
route = "station"
schedule = "1h"
evidence = ["n"]
query = "SELECT 1"
tiers = [ { level = "red", when = "n > 2" }, { level = "blue", when = "n > 0" } ]
"#;

    #[test]
    fn parses_and_refuses_with_field_and_reason() {
        let m = Model::parse(GOOD, Path::new("models/m.toml")).unwrap();
        assert_eq!(m.tiers.len(), 2);
        assert_eq!(m.schedule.as_secs(), 3600);
        assert_eq!(m.keep_for, 1);

        let bad = GOOD
            .replace("version = 1", "version = 0")
            .replace("\"1h\"", "\"soon\"")
            .replace(
                "level = \"blue\"",
                "level = \"orange\", when = \"x\" }, { level = \"red\"",
            );
        let errs = Model::parse(&bad, Path::new("models/m.toml")).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"version"), "{errs:?}");
        assert!(fields.contains(&"schedule"), "{errs:?}");
        assert!(fields.iter().any(|f| f.starts_with("tiers[")), "{errs:?}");

        let errs = Model::parse(GOOD, Path::new("models/other.toml")).unwrap_err();
        assert_eq!(errs[0].field, "id");
        assert!(errs[0].to_string().starts_with("models/other.toml: id: "));

        let errs =
            Model::parse(&GOOD.replace("purpose", "porpose"), Path::new("m.toml")).unwrap_err();
        assert!(errs[0].reason.contains("porpose"), "{errs:?}");

        // A purpose is a purpose as the contracts and the audit log name them, or nothing.
        for bad in ["", " ", "Fugitive Tracking", "fugitive_tracking"] {
            let errs = Model::parse(
                &GOOD.replace(
                    "purpose = \"fugitive-tracking\"",
                    &format!("purpose = \"{bad}\""),
                ),
                Path::new("m.toml"),
            )
            .unwrap_err();
            assert!(
                errs.iter().any(|e| e.field == "purpose"),
                "{bad:?}: {errs:?}"
            );
        }

        let errs = Model::parse(
            &GOOD.replace(
                "evidence = [\"n\"]",
                "evidence = [\"n\"]\nreveal_as = { m = { within_days = [7] }, n = { within_days = [9, 3] } }",
            ),
            Path::new("models/m.toml"),
        )
        .unwrap_err();
        let reasons: Vec<&str> = errs.iter().map(|e| e.reason.as_str()).collect();
        assert!(
            reasons.iter().any(|r| r.contains("`m` is not listed")),
            "{errs:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("ascending")), "{errs:?}");
    }

    #[test]
    fn the_digest_changes_with_every_value_and_nothing_else() {
        let path = Path::new("models/m.toml");
        let base = Model::parse(GOOD, path).unwrap().digest();
        // Layout, comments and key order do not change what was approved.
        let reordered = format!(
            "# a comment\n{}",
            GOOD.replace("version = 1\n", "")
                .replace("id = \"m\"", "id = \"m\"\n\nversion   =   1")
        );
        assert_eq!(Model::parse(&reordered, path).unwrap().digest(), base);
        // Every field's value does.
        let changes = [
            ("version = 1", "version = 2"),
            ("en = \"Test\"", "en = \"Test!\""),
            ("category = \"fugitive\"", "category = \"fraud\""),
            ("purpose = \"fugitive-tracking\"", "purpose = \"analysis\""),
            ("subject = \"person\"", "subject = \"phone\""),
            ("route = \"station\"", "route = \"st\""),
            ("schedule = \"1h\"", "schedule = \"2h\""),
            ("evidence = [\"n\"]", "evidence = [\"n\"]\nkeep_for = 3"),
            ("evidence = [\"n\"]", "evidence = [\"n\", \"o\"]"),
            (
                "evidence = [\"n\"]",
                "evidence = [\"n\"]\nreveal_as = { n = { within_days = [7] } }",
            ),
            (
                "evidence = [\"n\"]",
                "evidence = [\"n\"]\ndescription = \"d\"",
            ),
            ("SELECT 1", "SELECT  1"),
            ("n > 2", "n > 3"),
            ("when = \"n > 0\" }", "when = \"n > 0\", why = \"w\" }"),
            ("level = \"blue\"", "level = \"yellow\""),
        ];
        let mut seen = BTreeSet::from([base.to_string()]);
        for (from, to) in changes {
            assert!(GOOD.contains(from), "{from}");
            let d = Model::parse(&GOOD.replacen(from, to, 1), path)
                .unwrap_or_else(|e| panic!("{to}: {e:?}"))
                .digest();
            assert!(
                seen.insert(d.to_string()),
                "changing `{from}` to `{to}` kept the digest"
            );
        }
    }
}
