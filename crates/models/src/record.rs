//! Recording a run: alert store and audit log together.

use blindwatch_alerts::{AlertStore, AlertStoreError, Change, RunInput, RunOutcome};
use blindwatch_audit::{AuditEvent, AuditLog, AuditRecord, ModelId, Principal, Timestamp};
use chrono::{DateTime, Utc};

use crate::evaluate::Evaluation;
use crate::model::Model;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Store(#[from] AlertStoreError),
    #[error(
        "model id `{0}` cannot be written to the audit log; use lowercase letters, digits and `-`"
    )]
    ModelId(String),
}

/// Applies `evaluation` to the alert store. The audit records (the run, and each alert
/// opened, changed or resolved) are appended before the store commits, so no change is ever
/// stored unaudited; if the audit log refuses, the run stores nothing.
pub async fn record_run(
    store: &AlertStore,
    audit: &mut AuditLog,
    actor: &Principal,
    model: &Model,
    evaluation: Evaluation,
    as_of: DateTime<Utc>,
) -> Result<RunOutcome, RecordError> {
    let model_id = ModelId::new(&model.id).map_err(|_| RecordError::ModelId(model.id.clone()))?;
    let run = RunInput {
        model: &model.id,
        version: model.version,
        category: model.category.as_str(),
        subject_kind: model.subject.as_str(),
        keep_for: model.keep_for,
        as_of,
    };
    let outcome = store
        .apply_run(&run, evaluation.findings, |outcome| {
            let time = Timestamp::now();
            let record = |event| AuditRecord {
                time,
                actor: actor.clone(),
                event,
            };
            let mut records = vec![record(AuditEvent::ModelRun {
                model: model_id.clone(),
                version: model.version,
                subjects: outcome.subjects,
                alerts_opened: outcome.count(Change::Opened),
                alerts_changed: outcome.count(Change::Raised) + outcome.count(Change::Lowered),
            })];
            for c in &outcome.changes {
                records.push(record(match c.change {
                    Change::Opened => AuditEvent::AlertOpened {
                        alert: c.alert.clone(),
                        model: model_id.clone(),
                        version: model.version,
                        tier: c.to,
                        station: c.station.clone(),
                    },
                    Change::Raised | Change::Lowered => AuditEvent::AlertTierChanged {
                        alert: c.alert.clone(),
                        model: model_id.clone(),
                        // A raise or a lowering always has the tier it left.
                        from: c.from.unwrap_or(c.to),
                        to: c.to,
                        station: c.station.clone(),
                    },
                    Change::Resolved => AuditEvent::AlertClosed {
                        alert: c.alert.clone(),
                        model: model_id.clone(),
                        tier: c.to,
                        station: c.station.clone(),
                    },
                }));
            }
            audit.append_batch(&records).map(|_| ())
        })
        .await?;
    Ok(outcome)
}
