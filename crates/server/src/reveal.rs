//! Reveal: the identity behind an alert, for an officer of its station who wrote a
//! justification, where the access policies allow (orange or red, own station).
//!
//! Only the police's own contributions can be revealed, and only their identifier columns
//! that the contract marks `reveal = true` (kept encrypted beside the token at sealing).
//! Partner data is never revealed: its raw identifiers were dropped at the partner and never
//! reached the platform. The engine reads the revealable columns of the police tables and
//! keeps the rows whose token maps to the alert's subject under the deployment key.
//!
//! This is the one place a raw identifier leaves the platform, so the values live in a type
//! that never logs or prints them, and every request is audited before anything is read.

use arrow_array::cast::AsArray;
use arrow_array::{Array, FixedSizeBinaryArray};
use blindwatch_alerts::Pseudonymizer;
use blindwatch_contract::Role;
use blindwatch_engine::Engine;
use blindwatch_store::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("the engine could not read the police's revealable columns: {0}")]
    Engine(#[from] blindwatch_engine::EngineError),
    #[error("a police table returned a column of an unexpected type; check its contract")]
    Shape,
}

/// One revealed field. Serialised only into the reveal response, to the officer who asked;
/// its `Debug` hides the value so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevealedField {
    pub table: String,
    pub column: String,
    pub value: String,
}

impl std::fmt::Debug for RevealedField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevealedField({}.{}, ..)", self.table, self.column)
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The revealable fields of the police partner's tables for the subject whose key under the
/// deployment key is `subject_key` (identifier kind `kind`).
pub async fn reveal(
    dir: &DataDir,
    police_partner: &str,
    pseudonyms: &Pseudonymizer,
    kind: &str,
    subject_key: &str,
) -> Result<Vec<RevealedField>, RevealError> {
    let engine = Engine::open(dir).await?;
    let tables: Vec<String> = engine.tables().into_iter().map(|t| t.name).collect();
    let mut out: Vec<RevealedField> = Vec::new();
    for contract in engine.contracts().iter() {
        if contract.partner != police_partner || !tables.contains(&contract.table_name()) {
            continue;
        }
        let identifiers: Vec<_> = contract
            .columns
            .iter()
            .filter(|c| c.role == Role::Identifier)
            .collect();
        // The token column that names the subject, and every revealable value of the row.
        let Some(subject_column) = identifiers
            .iter()
            .find(|c| c.kind.is_some_and(|k| k.as_str() == kind))
        else {
            continue;
        };
        let revealable: Vec<&str> = identifiers
            .iter()
            .filter(|c| c.reveal)
            .map(|c| c.name.as_str())
            .collect();
        if revealable.is_empty() {
            continue;
        }
        let table = contract.table_name();
        let sql = format!(
            "SELECT {}, {} FROM {table} WHERE {} IS NOT NULL",
            quote(subject_column.token_name()),
            revealable
                .iter()
                .map(|c| quote(c))
                .collect::<Vec<_>>()
                .join(", "),
            quote(subject_column.token_name()),
        );
        let plan = engine.plan(&sql).await?;
        for batch in engine.execute(&plan).await? {
            let tokens = batch
                .column(0)
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or(RevealError::Shape)?;
            for row in 0..batch.num_rows() {
                if tokens.is_null(row) {
                    continue;
                }
                let (key, _) = pseudonyms.subject(kind, tokens.value(row));
                if key.as_str() != subject_key {
                    continue;
                }
                for (i, column) in revealable.iter().enumerate() {
                    let values = batch.column(i + 1);
                    let Some(values) = values.as_string_opt::<i32>() else {
                        return Err(RevealError::Shape);
                    };
                    if values.is_null(row) {
                        continue;
                    }
                    let field = RevealedField {
                        table: table.clone(),
                        column: (*column).to_owned(),
                        value: values.value(row).to_owned(),
                    };
                    if !out.contains(&field) {
                        out.push(field);
                    }
                }
            }
        }
    }
    Ok(out)
}
