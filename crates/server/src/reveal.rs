//! Reveal: the identity behind an alert, for an officer of its station who wrote a
//! justification, where the access policies allow (orange or red, own station).
//!
//! A reveal reads only the alert subject's own lineage. The model that raised the alert
//! names its subject in a result column; the engine's plan analysis says which base column
//! that value comes from (table and token column). Reveal reads that table only, only the
//! rows whose token in that column maps to the alert's subject under the deployment key,
//! and only the revealable values that are the subject's:
//!
//! - the raw value of that very identifier, when its contract marks it `reveal = true`;
//! - when that column is the table's whole privacy unit (each row is about that person and
//!   nobody else), the row's revealable name (the name beside the ID number).
//!
//! Never another column of the subject's kind (a guardian's phone is not the caller's), never
//! another table that happens to hold the same kind of identifier, and never partner data:
//! only the police partner's tables. When the lineage has no revealable column the reveal is
//! refused before anything is read.
//!
//! This is the one place a raw identifier leaves the platform, so the values live in a type
//! that never logs or prints them.

use arrow_array::cast::AsArray;
use arrow_array::{Array, FixedSizeBinaryArray};
use blindwatch_alerts::{Alert, Pseudonymizer};
use blindwatch_common::IdentifierKind;
use blindwatch_contract::{ContractSet, Role};
use blindwatch_engine::{ColumnRef, Engine};
use blindwatch_models::Model;
use blindwatch_models::model::SUBJECT_COLUMN;
use blindwatch_store::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum RevealError {
    #[error("the engine could not read the police's revealable columns: {0}")]
    Engine(#[from] blindwatch_engine::EngineError),
    #[error("a police table returned a column of an unexpected type; check its contract")]
    Shape,
    #[error(
        "the model that raised this alert is no longer registered at the alert's version, so where its subject comes from cannot be told; reveal is refused"
    )]
    ModelChanged,
    #[error(
        "the alert's subject comes from no column the police may reveal (its model takes the subject from {lineage}); reveal names only the subject's own identity, so there is nothing to reveal"
    )]
    NoRevealableLineage { lineage: String },
}

impl RevealError {
    /// The rule a refusal names; None for a failure of the platform.
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            RevealError::Engine(_) | RevealError::Shape => None,
            RevealError::ModelChanged => Some("model-changed"),
            RevealError::NoRevealableLineage { .. } => Some("no-revealable-lineage"),
        }
    }
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

/// What one lineage column lets reveal read: a table, its token column for the subject, and
/// the revealable columns that are the subject's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealTarget {
    pub table: String,
    pub token: String,
    pub columns: Vec<String>,
}

/// The revealable columns of each lineage column of a subject of `kind` (see the module
/// documentation): only the police partner's tables, only the token columns of identifiers
/// of that kind, only that identifier's own raw value and, when the column is the table's
/// whole privacy unit, the row's revealable name.
pub fn targets(
    contracts: &ContractSet,
    police_partner: &str,
    lineage: &[ColumnRef],
    kind: &str,
) -> Vec<RevealTarget> {
    let mut out: Vec<RevealTarget> = Vec::new();
    for source in lineage {
        let Ok(contract) = contracts.get(&source.table) else {
            continue;
        };
        if contract.partner != police_partner {
            continue;
        }
        let is_kind = |c: &blindwatch_contract::Column| c.kind.is_some_and(|k| k.as_str() == kind);
        let Some(identifier) = contract
            .columns
            .iter()
            .find(|c| c.role == Role::Identifier && c.token_name() == source.column && is_kind(c))
        else {
            continue;
        };
        let mut columns = Vec::new();
        if identifier.reveal {
            columns.push(identifier.name.clone());
        }
        if contract.privacy_unit.columns == [source.column.clone()] {
            columns.extend(
                contract
                    .columns
                    .iter()
                    .filter(|c| {
                        c.role == Role::Identifier
                            && c.reveal
                            && !is_kind(c)
                            && c.kind == Some(IdentifierKind::Name)
                    })
                    .map(|c| c.name.clone()),
            );
        }
        let target = RevealTarget {
            table: source.table.clone(),
            token: source.column.clone(),
            columns,
        };
        if !target.columns.is_empty() && !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// A reveal resolved against the alert's model, before anything revealable is read.
pub struct RevealPlan {
    engine: Engine,
    targets: Vec<RevealTarget>,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl RevealPlan {
    /// Resolves where the alert's subject comes from: the registered model at the alert's
    /// version, planned by the engine, its subject column's lineage, and the revealable
    /// columns of that lineage. Refused when the model changed or nothing is revealable.
    pub async fn resolve(
        dir: &DataDir,
        engine: Engine,
        police_partner: &str,
        alert: &Alert,
    ) -> Result<RevealPlan, RevealError> {
        let path = dir.models_dir().join(format!("{}.toml", alert.model));
        let model = Model::load(&path).map_err(|_| RevealError::ModelChanged)?;
        if model.id != alert.model
            || model.version != alert.model_version
            || model.subject.as_str() != alert.subject_kind
        {
            return Err(RevealError::ModelChanged);
        }
        let plan = engine.plan(&model.query).await?;
        let lineage: Vec<ColumnRef> = plan
            .analysis()
            .outputs
            .iter()
            .find(|o| o.name == SUBJECT_COLUMN)
            .map(|o| o.raw_from.iter().cloned().collect())
            .unwrap_or_default();
        let targets = targets(
            engine.contracts(),
            police_partner,
            &lineage,
            &alert.subject_kind,
        );
        if targets.is_empty() {
            let names: Vec<String> = lineage.iter().map(ToString::to_string).collect();
            return Err(RevealError::NoRevealableLineage {
                lineage: if names.is_empty() {
                    "no base column".into()
                } else {
                    names.join(", ")
                },
            });
        }
        Ok(RevealPlan { engine, targets })
    }

    /// Reads the revealable values of the rows whose token maps to the subject whose key
    /// under the deployment key is `subject_key`.
    pub async fn read(
        &self,
        pseudonyms: &Pseudonymizer,
        kind: &str,
        subject_key: &str,
    ) -> Result<Vec<RevealedField>, RevealError> {
        let mut out: Vec<RevealedField> = Vec::new();
        for target in &self.targets {
            let sql = format!(
                "SELECT {}, {} FROM {} WHERE {} IS NOT NULL",
                quote(&target.token),
                target
                    .columns
                    .iter()
                    .map(|c| quote(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                target.table,
                quote(&target.token),
            );
            let plan = self.engine.plan(&sql).await?;
            for batch in self.engine.execute(&plan).await? {
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
                    for (i, column) in target.columns.iter().enumerate() {
                        let Some(values) = batch.column(i + 1).as_string_opt::<i32>() else {
                            return Err(RevealError::Shape);
                        };
                        if values.is_null(row) {
                            continue;
                        }
                        let field = RevealedField {
                            table: target.table.clone(),
                            column: column.clone(),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_contract::Contract;

    fn contract(text: &str) -> Contract {
        Contract::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    /// The shipped police contracts and two of the same shape with revealable phones and
    /// addresses, to test the relatives of the guardian-phone case.
    fn contracts() -> ContractSet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets");
        let mut all: Vec<Contract> = ContractSet::load_dir(&dir)
            .unwrap()
            .iter()
            .cloned()
            .collect();
        all.push(contract(
            r#"
partner = "police"
dataset = "calls"
privacy_unit = { columns = ["caller"], max_rows = 10 }
columns = [
  { name = "caller_id_number", type = "utf8", role = "identifier", kind = "person", token = "caller", reveal = true, uses = ["join"] },
  { name = "caller_name", type = "utf8", role = "identifier", kind = "name", token = "caller_name_token", reveal = true },
  { name = "caller_phone", type = "utf8", role = "identifier", kind = "phone", token = "caller_phone_t", reveal = true, uses = ["join"] },
  { name = "home", type = "utf8", role = "identifier", kind = "address", token = "home_t", reveal = true, uses = ["join"] },
  { name = "incident_address", type = "utf8", role = "identifier", kind = "address", token = "incident_address_t", reveal = true, uses = ["join"] },
]"#,
        ));
        all.push(contract(
            r#"
partner = "police"
dataset = "contacts"
privacy_unit = { columns = ["person"], max_rows = 1 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", reveal = true, uses = ["join"] },
  { name = "name", type = "utf8", role = "identifier", kind = "name", token = "name_token", reveal = true },
  { name = "contact_phone", type = "utf8", role = "identifier", kind = "phone", token = "contact_phone_t", reveal = true, uses = ["join"] },
  { name = "home", type = "utf8", role = "identifier", kind = "address", token = "home_t", reveal = true, uses = ["join"] },
]"#,
        ));
        all.push(contract(
            r#"
partner = "hospital"
dataset = "patients"
privacy_unit = { columns = ["person"], max_rows = 1 }
columns = [
  { name = "id_number", type = "utf8", role = "identifier", kind = "person", token = "person", reveal = true, uses = ["join"] },
]"#,
        ));
        ContractSet::from_contracts(all)
    }

    fn cols(t: &[RevealTarget]) -> Vec<String> {
        t.iter()
            .flat_map(|t| t.columns.iter().map(move |c| format!("{}.{c}", t.table)))
            .collect()
    }

    #[test]
    fn reveal_reads_only_the_subjects_own_lineage() {
        let set = contracts();
        let at = |table: &str, column: &str| vec![ColumnRef::new(table, column)];
        // A repeat caller's phone comes from the incidents: nothing there is revealable, and
        // the registry's guardian phone (same kind) is never read.
        assert!(
            targets(
                &set,
                "police",
                &at("police.incidents", "caller_phone"),
                "phone"
            )
            .is_empty()
        );
        // A registered patient: the ID number and name of the row that is about them.
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.mental_health_registry", "person"),
                "person"
            )),
            [
                "police.mental_health_registry.id_number",
                "police.mental_health_registry.name"
            ]
        );
        // The guardian phone itself: not revealable, and the row is not about its holder.
        assert!(
            targets(
                &set,
                "police",
                &at("police.mental_health_registry", "guardian_phone"),
                "phone"
            )
            .is_empty()
        );
        // A phone that is a caller's in one table and a contact's in another: only the
        // lineage table's own phone column, never the row's person, never the other table.
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.calls", "caller_phone_t"),
                "phone"
            )),
            ["police.calls.caller_phone"]
        );
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.contacts", "contact_phone_t"),
                "phone"
            )),
            ["police.contacts.contact_phone"]
        );
        // An address that is a home in one column and an incident location in another: only
        // the lineage column's own value.
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.calls", "incident_address_t"),
                "address"
            )),
            ["police.calls.incident_address"]
        );
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.calls", "home_t"),
                "address"
            )),
            ["police.calls.home"]
        );
        // The caller, whom each row is about: their ID number and name, not the row's phone
        // or addresses.
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.calls", "caller"),
                "person"
            )),
            ["police.calls.caller_id_number", "police.calls.caller_name"]
        );
        // A table whose rows are about someone else: only the identifier's own value.
        assert_eq!(
            cols(&targets(
                &set,
                "police",
                &at("police.contacts", "home_t"),
                "address"
            )),
            ["police.contacts.home"]
        );
        // Two lineage columns (a subject from either table): each its own.
        let both = [
            ColumnRef::new("police.calls", "caller_phone_t"),
            ColumnRef::new("police.contacts", "contact_phone_t"),
        ];
        assert_eq!(
            cols(&targets(&set, "police", &both, "phone")),
            ["police.calls.caller_phone", "police.contacts.contact_phone"]
        );
        // Partner data is never revealed, whatever its contract says.
        assert!(targets(&set, "police", &at("hospital.patients", "person"), "person").is_empty());
        // A column of another kind than the subject's is never a lineage for it.
        assert!(
            targets(
                &set,
                "police",
                &at("police.contacts", "contact_phone_t"),
                "person"
            )
            .is_empty()
        );
    }
}
