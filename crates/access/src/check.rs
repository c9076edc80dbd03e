//! Loading and checking policy sources: parse, give every policy its `@id`, validate in strict
//! mode against the schema, and turn Cedar's source spans into file:line:column diagnostics.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;

/// The schema file every policy directory must contain.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// One problem found in the schema or a policy file.
///
/// `line` and `column` are 1-based (column counts characters); both are 0 when the problem has
/// no position (the file cannot be read, a directory without policies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDiagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for PolicyDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// One entry per policy file, in file-name order.
    pub files: Vec<FileReport>,
    /// Validator and schema warnings (e.g. a policy that can never apply); not fatal.
    pub warnings: Vec<PolicyDiagnostic>,
}

impl CheckReport {
    /// Number of policies over all files.
    pub fn policy_count(&self) -> usize {
        self.files.iter().map(|f| f.policy_ids.len()).sum()
    }
}

/// The policies of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    pub file: String,
    /// The `@id`s of the file's policies, in source order.
    pub policy_ids: Vec<String>,
}

/// A schema and a policy set that passed strict validation against it.
pub(crate) struct Compiled {
    pub schema: Schema,
    pub policies: PolicySet,
    pub report: CheckReport,
}

/// The texts of a policy directory: (file name, text) of the schema and of each policy file.
pub(crate) struct Sources {
    pub schema: (String, String),
    pub policies: Vec<(String, String)>,
}

/// Reads `dir/schema.cedarschema` and every `dir/*.cedar`, sorted by name. File names in the
/// result are the paths as seen from the caller (`dir` joined with the file name).
pub(crate) fn read_dir(dir: &Path) -> Result<Sources, Vec<PolicyDiagnostic>> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| vec![no_position(&path_name(path), e)])
    };
    let schema_path = dir.join(SCHEMA_FILE);
    let schema = (path_name(&schema_path), read(&schema_path)?);

    let entries = std::fs::read_dir(dir).map_err(|e| vec![no_position(&path_name(dir), e)])?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| vec![no_position(&path_name(dir), e)])?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "cedar") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut policies = Vec::with_capacity(paths.len());
    for path in paths {
        let text = read(&path)?;
        policies.push((path_name(&path), text));
    }
    Ok(Sources { schema, policies })
}

fn path_name(path: &Path) -> String {
    path.display().to_string()
}

fn no_position(file: &str, message: impl fmt::Display) -> PolicyDiagnostic {
    PolicyDiagnostic {
        file: file.to_owned(),
        line: 0,
        column: 0,
        message: message.to_string(),
    }
}

/// Parses and validates; any error refuses the whole set (a half-loaded policy set could
/// silently drop a forbid).
pub(crate) fn compile(
    schema_file: &str,
    schema_src: &str,
    sources: &[(String, String)],
) -> Result<Compiled, Vec<PolicyDiagnostic>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let schema = match Schema::from_cedarschema_str(schema_src) {
        Ok((schema, schema_warnings)) => {
            for w in schema_warnings {
                warnings.push(diagnostic(schema_file, schema_src, &w));
            }
            Some(schema)
        }
        Err(e) => {
            errors.push(diagnostic(schema_file, schema_src, &e));
            None
        }
    };

    let mut sorted: Vec<&(String, String)> = sources.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if sorted.is_empty() {
        errors.push(no_position(
            schema_file,
            "no policy files (*.cedar) next to the schema",
        ));
    }

    let mut set = PolicySet::new();
    let mut files = Vec::new();
    // Policy id -> (file name, file text), to place validation errors.
    let mut origin: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (file, text) in sorted {
        let parsed = match PolicySet::from_str(text) {
            Ok(parsed) => parsed,
            Err(errs) => {
                for e in errs.iter() {
                    errors.push(diagnostic(file, text, e));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(no_position(
                file,
                "policy templates are not supported; write static policies",
            ));
        }
        let mut ids = Vec::new();
        for (offset, policy) in in_source_order(&parsed, text) {
            let at = |message: String| match offset {
                Some(o) => at_offset(file, text, o, message),
                None => no_position(file, message),
            };
            let Some(id) = policy.annotation("id") else {
                errors.push(at(
                    "policy has no @id(\"...\") annotation; every policy needs one".into(),
                ));
                continue;
            };
            if let Some((other, _)) = origin.get(id) {
                errors.push(at(format!(
                    "duplicate policy id {id:?} (already used in {other})"
                )));
                continue;
            }
            let renamed = policy.new_id(PolicyId::new(id));
            if let Err(e) = set.add(renamed) {
                errors.push(at(e.to_string()));
                continue;
            }
            origin.insert(id.to_owned(), (file, text));
            ids.push(id.to_owned());
        }
        files.push(FileReport {
            file: file.clone(),
            policy_ids: ids,
        });
    }

    let Some(schema) = schema else {
        return Err(errors);
    };
    let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let place = |id: &PolicyId| {
        origin
            .get(AsRef::<str>::as_ref(id))
            .copied()
            .unwrap_or(("<unknown>", ""))
    };
    for e in validation.validation_errors() {
        let (file, text) = place(e.policy_id());
        errors.push(diagnostic(file, text, e));
    }
    for w in validation.validation_warnings() {
        let (file, text) = place(w.policy_id());
        warnings.push(diagnostic(file, text, w));
    }

    if errors.is_empty() {
        Ok(Compiled {
            schema,
            policies: set,
            report: CheckReport { files, warnings },
        })
    } else {
        Err(errors)
    }
}

/// The policies of one parsed file in source order, each with its byte offset when found.
/// `PolicySet::from_str` names them `policy0`, `policy1`, ... in order, and `to_cedar` gives
/// back each one's original text, which we look for after the previous one.
fn in_source_order<'a>(parsed: &'a PolicySet, text: &str) -> Vec<(Option<usize>, &'a Policy)> {
    let mut numbered: Vec<(usize, &Policy)> = parsed
        .policies()
        .map(|p| {
            let n = AsRef::<str>::as_ref(p.id())
                .strip_prefix("policy")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            (n, p)
        })
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let mut cursor = 0;
    numbered
        .into_iter()
        .map(|(_, p)| {
            let offset = p.to_cedar().and_then(|src| {
                let found = text.get(cursor..)?.find(&src)? + cursor;
                cursor = found + src.len();
                Some(found)
            });
            (offset, p)
        })
        .collect()
}

/// A diagnostic placed at the first labelled span Cedar gives, if any.
fn diagnostic(file: &str, text: &str, d: &dyn Diagnostic) -> PolicyDiagnostic {
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message.push_str(&format!(" (help: {help})"));
    }
    let offset = d
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    match offset {
        Some(o) => at_offset(file, text, o, message),
        None => no_position(file, message),
    }
}

fn at_offset(file: &str, text: &str, offset: usize, message: String) -> PolicyDiagnostic {
    let (line, column) = line_column(text, offset);
    PolicyDiagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// 1-based line and character column of a byte offset (clamped to the text).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_column_counts_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 1), (1, 2));
        assert_eq!(line_column(text, 3), (2, 1));
        // 'é' is two bytes, so 'f' (line 3) is at byte 8.
        assert_eq!(line_column(text, 8), (3, 1));
        // Inside 'é' rounds down to its start; past the end clamps.
        assert_eq!(line_column(text, 6), (2, 3));
        assert_eq!(line_column(text, 100), (3, 2));
    }
}
