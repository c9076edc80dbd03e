#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `check` and `load` on policy directories: what a clean set reports, and where problems are
//! placed (file, line, column) for parse and validation errors.

use std::path::{Path, PathBuf};

use blindwatch_access::{AccessPolicies, PolicyDiagnostic, check, shipped};
use tempfile::TempDir;

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

/// A copy of the shipped schema and policies plus `extra` (file name, text) files.
fn dir_with(extra: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), shipped::SCHEMA).unwrap();
    for (name, text) in shipped::POLICIES.iter().chain(extra) {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let offset = text.find(needle).unwrap();
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

fn only_in<'a>(diagnostics: &'a [PolicyDiagnostic], file: &str) -> Vec<&'a PolicyDiagnostic> {
    diagnostics
        .iter()
        .filter(|d| Path::new(&d.file).file_name().unwrap() == file)
        .collect()
}

#[test]
fn the_shipped_directory_checks_clean() {
    let report = check(&policies_dir()).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    let files: Vec<(String, Vec<String>)> = report
        .files
        .iter()
        .map(|f| {
            let name = Path::new(&f.file).file_name().unwrap();
            (name.to_string_lossy().into_owned(), f.policy_ids.clone())
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("auditor-read-audit.cedar", "auditor-read-audit"),
        ("duty-officer-county-red.cedar", "duty-officer-county-red"),
        (
            "forbid-reveal-without-justification.cedar",
            "forbid-reveal-without-justification",
        ),
        ("officer-own-station.cedar", "officer-own-station"),
        ("officer-reveal.cedar", "officer-reveal"),
        (
            "officer-silence-own-station.cedar",
            "officer-silence-own-station",
        ),
        ("partner-own-dataset.cedar", "partner-own-dataset"),
        ("specialist-models.cedar", "specialist-models"),
    ]
    .iter()
    .map(|(f, id)| (f.to_string(), vec![id.to_string()]))
    .collect();
    assert_eq!(files, want);
    assert_eq!(report.policy_count(), 8);
}

const SYNTAX_ERROR: &str = "// A policy with a hole in its condition.\n\
@id(\"broken\")\n\
permit (principal, action, resource)\n\
when { principal.duty == };\n";

#[test]
fn a_syntax_error_is_placed_by_file_line_and_column() {
    let dir = dir_with(&[("broken.cedar", SYNTAX_ERROR)]);
    let diagnostics = check(dir.path()).unwrap_err();
    let broken = only_in(&diagnostics, "broken.cedar");
    assert_eq!(broken.len(), 1, "{diagnostics:#?}");
    // The parser stops at the `}` where an operand should be.
    assert_eq!(
        (broken[0].line, broken[0].column),
        position_of(SYNTAX_ERROR, "};"),
        "{broken:#?}"
    );
    assert_eq!(diagnostics.len(), 1, "only the broken file has a problem");

    // The same directory refuses to load.
    let err = AccessPolicies::load(dir.path()).err().unwrap();
    assert_eq!(err.diagnostics(), &diagnostics[..]);
    assert!(err.to_string().contains("broken.cedar:4:"), "{err}");
}

const UNKNOWN_ATTRIBUTE: &str = "// Alerts have a tier, not a severity.\n\
@id(\"by-severity\")\n\
permit (\n\
  principal is Blindwatch::Officer,\n\
  action == Blindwatch::Action::\"read_alert\",\n\
  resource is Blindwatch::Alert\n\
)\n\
when { resource.severity == 4 };\n";

const WRONG_TYPE: &str = "@id(\"tier-as-text\")\n\
permit (\n\
  principal is Blindwatch::Officer,\n\
  action == Blindwatch::Action::\"read_alert\",\n\
  resource is Blindwatch::Alert\n\
)\n\
when { resource.tier > \"orange\" };\n";

#[test]
fn validation_errors_are_placed_and_all_reported_at_once() {
    let dir = dir_with(&[
        ("unknown-attribute.cedar", UNKNOWN_ATTRIBUTE),
        ("wrong-type.cedar", WRONG_TYPE),
    ]);
    let diagnostics = check(dir.path()).unwrap_err();

    let unknown = only_in(&diagnostics, "unknown-attribute.cedar");
    assert_eq!(unknown.len(), 1, "{diagnostics:#?}");
    assert_eq!(
        (unknown[0].line, unknown[0].column),
        position_of(UNKNOWN_ATTRIBUTE, "resource.severity"),
        "{unknown:#?}"
    );
    assert!(unknown[0].message.contains("severity"), "{unknown:#?}");

    let wrong = only_in(&diagnostics, "wrong-type.cedar");
    assert!(!wrong.is_empty(), "{diagnostics:#?}");
    assert_eq!(
        (wrong[0].line, wrong[0].column),
        position_of(WRONG_TYPE, "\"orange\""),
        "{wrong:#?}"
    );
    assert!(wrong[0].message.contains("Long"), "{wrong:#?}");

    assert_eq!(diagnostics.len(), unknown.len() + wrong.len());
    assert!(AccessPolicies::load(dir.path()).is_err());
}

#[test]
fn every_policy_needs_a_unique_id() {
    let missing = "// first fine, second without id\n\
@id(\"fine\")\n\
permit (principal is Blindwatch::Auditor, action, resource);\n\
\n\
permit (principal is Blindwatch::Auditor, action, resource);\n";
    let duplicate = "@id(\"officer-own-station\")\n\
permit (principal is Blindwatch::Auditor, action, resource);\n";
    let dir = dir_with(&[("missing.cedar", missing), ("zz-dup.cedar", duplicate)]);
    let diagnostics = check(dir.path()).unwrap_err();

    let m = only_in(&diagnostics, "missing.cedar");
    assert_eq!(m.len(), 1, "{diagnostics:#?}");
    assert_eq!((m[0].line, m[0].column), (5, 1), "{m:#?}");
    assert!(m[0].message.contains("@id"), "{m:#?}");

    let d = only_in(&diagnostics, "zz-dup.cedar");
    assert_eq!(d.len(), 1, "{diagnostics:#?}");
    assert_eq!((d[0].line, d[0].column), (1, 1), "{d:#?}");
    assert!(d[0].message.contains("officer-own-station.cedar"), "{d:#?}");
}

#[test]
fn schema_errors_and_missing_files_refuse_the_load() {
    // A schema error is placed in the schema file.
    let dir = dir_with(&[]);
    let bad_schema = shipped::SCHEMA.replace("tier: Long", "tier: Lnog");
    std::fs::write(dir.path().join("schema.cedarschema"), &bad_schema).unwrap();
    let diagnostics = check(dir.path()).unwrap_err();
    let schema = only_in(&diagnostics, "schema.cedarschema");
    assert!(!schema.is_empty(), "{diagnostics:#?}");
    assert_eq!(
        (schema[0].line, schema[0].column),
        position_of(&bad_schema, "Lnog"),
        "{schema:#?}"
    );

    // No schema at all.
    let empty = tempfile::tempdir().unwrap();
    let diagnostics = check(empty.path()).unwrap_err();
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].line, 0);

    // A schema but no policies: refused rather than an everything-denied platform.
    std::fs::write(empty.path().join("schema.cedarschema"), shipped::SCHEMA).unwrap();
    assert!(AccessPolicies::load(empty.path()).is_err());
}
