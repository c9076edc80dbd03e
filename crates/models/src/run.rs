//! The one model-run service behind `blindwatch run`, the server's `POST /v1/models/run` and
//! scheduler, and the benchmark: load the registered models, check each and verify its
//! partners' approvals again (every refusal audited; if any is refused, none runs), then
//! evaluate, record (alerts and audit together) and checkpoint the audit log.

use std::path::Path;
use std::time::{Duration, Instant};

use blindwatch_alerts::{AlertStore, Pseudonymizer};
use blindwatch_audit::{AuditError, AuditLog, Principal};
use blindwatch_engine::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::Mutex;

use crate::evaluate::{EvaluateError, evaluate};
use crate::model::{Model, ModelError, load_dir};
use crate::record::{RecordError, record_run};
use crate::registry::{Registry, RegistryError};
use crate::summary::{Counts, RunSummary};

/// The instant a run evaluates as of: noon UTC of `as_of` (so that every time zone of the
/// deployment sees the same day), or now.
pub fn run_time(as_of: Option<NaiveDate>) -> DateTime<Utc> {
    as_of.map_or_else(Utc::now, |d| d.and_time(NOON).and_utc())
}

// PANIC SAFETY: 12:00:00 is a valid time of day; evaluated at compile time.
#[allow(clippy::unwrap_used)]
const NOON: chrono::NaiveTime = chrono::NaiveTime::from_hms_opt(12, 0, 0).unwrap();

/// Why a run did not happen, or stopped. Messages say what to do and quote no data.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{} registered model file(s) no longer load; nothing was run: {}", .0.len(), join(.0))]
    Load(Vec<ModelError>),
    #[error("no registered model `{0}`: register it first (`blindwatch model register`)")]
    UnknownModel(String),
    #[error("no registered models: register some first (`blindwatch model register`)")]
    NoModels,
    /// Registered models that no longer check or lack approvals (each audited); none ran.
    #[error("{} registered model(s) refused; nothing was run: {}", .0.len(), join(.0))]
    Refused(Vec<RegistryError>),
    #[error(transparent)]
    Registry(RegistryError),
    #[error(transparent)]
    Evaluate(#[from] EvaluateError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the audit log could not be checkpointed ({0})")]
    Checkpoint(#[from] AuditError),
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A run that failed part-way: what was recorded before the failure is real (the caller
/// publishes it) and the error.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunFailed {
    pub recorded: Vec<ModelRunReport>,
    #[source]
    pub error: RunError,
}

impl From<RunError> for RunFailed {
    fn from(error: RunError) -> RunFailed {
        RunFailed {
            recorded: Vec::new(),
            error,
        }
    }
}

/// One model's run.
#[derive(Debug, Clone)]
pub struct ModelRunReport {
    pub summary: RunSummary,
    pub evaluate: Duration,
    pub record: Duration,
}

/// What a run works with. The audit log is behind a lock taken for each step that writes
/// it, never across an evaluation.
pub struct RunService<'a> {
    pub engine: &'a Engine,
    /// Where registered models are (`DataDir::models_dir`).
    pub models_dir: &'a Path,
    pub alerts: &'a AlertStore,
    pub pseudonyms: &'a Pseudonymizer,
    pub audit: &'a Mutex<AuditLog>,
    /// k: subject counts under it are not released in the summaries.
    pub min_group_size: u64,
}

impl RunService<'_> {
    /// Evaluates the registered models (or only `only`) as of `now` and records their alerts
    /// as `actor`. Every model's checks and approvals are verified again first: if any is
    /// refused (each refusal audited), none runs. The audit log is checkpointed at the end,
    /// whatever happened.
    pub async fn run(
        &self,
        only: Option<&str>,
        now: DateTime<Utc>,
        actor: &Principal,
    ) -> Result<Vec<ModelRunReport>, RunFailed> {
        let models: Vec<Model> = load_dir(self.models_dir)
            .map_err(RunError::Load)?
            .into_iter()
            .filter(|m| only.is_none_or(|id| m.id == id))
            .collect();
        if models.is_empty() {
            return Err(match only {
                Some(id) => RunError::UnknownModel(id.to_owned()),
                None => RunError::NoModels,
            }
            .into());
        }
        let result = self.run_models(models, now, actor).await;
        let checkpoint = self.audit.lock().await.checkpoint();
        match (result, checkpoint) {
            (Ok(reports), Ok(_)) => Ok(reports),
            (Ok(recorded), Err(e)) => Err(RunFailed {
                recorded,
                error: e.into(),
            }),
            (Err(failed), Err(e)) => {
                tracing::error!(error = %e, "audit checkpoint after a failed model run failed");
                Err(failed)
            }
            (Err(failed), Ok(_)) => Err(failed),
        }
    }

    async fn run_models(
        &self,
        models: Vec<Model>,
        now: DateTime<Utc>,
        actor: &Principal,
    ) -> Result<Vec<ModelRunReport>, RunFailed> {
        let registry = Registry {
            engine: self.engine,
            models_dir: self.models_dir,
        };
        let mut approved = Vec::new();
        let mut refusals = Vec::new();
        for model in models {
            match registry.approved_for_run(self.audit, actor, model).await {
                Ok(a) => approved.push(a),
                Err(e @ (RegistryError::Refused(_) | RegistryError::Unapproved(_))) => {
                    refusals.push(e);
                }
                Err(e) => return Err(RunError::Registry(e).into()),
            }
        }
        if !refusals.is_empty() {
            return Err(RunError::Refused(refusals).into());
        }
        let mut recorded = Vec::new();
        for a in &approved {
            let step = async {
                let started = Instant::now();
                let evaluation = evaluate(self.engine, a, self.pseudonyms, now).await?;
                let evaluated = started.elapsed();
                let counts = Counts::of(&evaluation);
                let started = Instant::now();
                let mut audit = self.audit.lock().await;
                let outcome =
                    record_run(self.alerts, &mut audit, actor, a.model(), evaluation, now).await?;
                drop(audit);
                Ok::<_, RunError>(ModelRunReport {
                    summary: RunSummary::new(a.model(), counts, &outcome, self.min_group_size),
                    evaluate: evaluated,
                    record: started.elapsed(),
                })
            };
            match step.await {
                Ok(r) => recorded.push(r),
                Err(error) => return Err(RunFailed { recorded, error }),
            }
        }
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_runs_at_its_noon_utc() {
        let d = NaiveDate::from_ymd_opt(2026, 11, 30);
        assert_eq!(
            run_time(d).to_rfc3339(),
            "2026-11-30T12:00:00+00:00",
            "noon UTC of the day"
        );
        let before = Utc::now();
        let t = run_time(None);
        assert!(t >= before && t <= Utc::now(), "no day: now");
    }
}
