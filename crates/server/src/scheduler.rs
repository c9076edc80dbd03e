//! Model runs: on demand (`POST /v1/models/run`) and on each model's schedule.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use blindwatch_audit::Principal;
use blindwatch_models::{RegistryError, RunError, RunService, RunSummary, load_dir, run_time};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::problem::Problem;
use crate::state::AppState;

/// The problem for a refusal of the model service (checks, approvals); anything else is the
/// server's own failure.
pub fn registry_problem(e: &RegistryError) -> Problem {
    match e {
        RegistryError::Refused(_) => Problem::unprocessable("model-refused", e.to_string()),
        RegistryError::Approvals(_) => {
            Problem::unprocessable("approval-refused", e.to_string()).with_rule("partner-approval")
        }
        RegistryError::Unapproved(_) => {
            Problem::unprocessable("model-unapproved", e.to_string()).with_rule("partner-approval")
        }
        RegistryError::Audit(_) | RegistryError::Catalog(_) | RegistryError::Install { .. } => {
            Problem::internal(e)
        }
    }
}

/// The problem for a run the model service refused or could not finish.
fn run_problem(e: &RunError) -> Problem {
    match e {
        RunError::Load(errors) => Problem::unprocessable(
            "model-refused",
            format!(
                "a registered model no longer loads: {}",
                errors.first().map_or_else(String::new, ToString::to_string)
            ),
        ),
        RunError::UnknownModel(_) | RunError::NoModels => Problem::not_found("registered model"),
        RunError::Refused(refusals) => match refusals.as_slice() {
            [one] => registry_problem(one),
            _ => Problem::unprocessable("model-refused", e.to_string()),
        },
        RunError::Registry(r) => registry_problem(r),
        RunError::Evaluate(_) | RunError::Record(_) | RunError::Checkpoint(_) => {
            Problem::internal(e)
        }
    }
}

/// Evaluates the registered models (or one) as of `now`, records their alerts (audited),
/// and publishes the changes to the live streams: the model service
/// ([`blindwatch_models::RunService`]) over the server's engine (current with the latest uploads).
/// Counts in the summaries are released only at `min_group_size` or more.
pub async fn run_models(
    state: &AppState,
    only: Option<&str>,
    now: DateTime<Utc>,
    actor: &Principal,
) -> Result<Vec<RunSummary>, Problem> {
    let _writer = state.writer.lock().await;
    let engine = state.engine().await.map_err(|e| Problem::internal(&e))?;
    let service = RunService {
        engine: &engine,
        models_dir: &state.dir.models_dir(),
        alerts: &state.alerts,
        pseudonyms: &state.pseudonyms,
        audit: &state.audit,
        min_group_size: state.gate.min_group_size,
    };
    let result = service.run(only, now, actor).await;
    let recorded = match &result {
        Ok(reports) => reports.len(),
        Err(f) => f.recorded.len(),
    };
    state
        .metrics
        .model_runs
        .fetch_add(recorded as u64, Ordering::Relaxed);
    if recorded > 0 {
        // Whatever was recorded, even before a failure, is real: stream it.
        state.fanout.publish(&state.alerts).await;
    }
    match result {
        Ok(reports) => Ok(reports.into_iter().map(|r| r.summary).collect()),
        Err(f) => Err(run_problem(&f.error)),
    }
}

/// Runs each registered model every `schedule`, first right after start. A model's failure
/// is logged and retried at its next slot; it never stops the others.
pub async fn run(
    state: AppState,
    as_of: Option<chrono::NaiveDate>,
    mut stop: watch::Receiver<bool>,
) {
    let actor = match Principal::new("platform:scheduler") {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "scheduler disabled");
            return;
        }
    };
    let mut due: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        let now = tokio::time::Instant::now();
        let models = match load_dir(&state.dir.models_dir()) {
            Ok(models) => models,
            Err(errors) => {
                // A broken models folder stops every scheduled run: say so each minute until
                // it is fixed (the runs themselves refuse, audited, whatever does not check).
                for e in &errors {
                    tracing::error!(error = %e, "registered model does not load; no scheduled run");
                }
                Vec::new()
            }
        };
        for m in &models {
            let at = *due.entry(m.id.clone()).or_insert(now);
            if at <= now {
                match run_models(&state, Some(&m.id), run_time(as_of), &actor).await {
                    Ok(s) => tracing::info!(model = %m.id, runs = s.len(), "scheduled run"),
                    Err(p) => {
                        tracing::warn!(model = %m.id, problem = %p.detail, "scheduled run failed")
                    }
                }
                due.insert(m.id.clone(), now + m.schedule);
            }
        }
        let next = due
            .values()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(60))
            .min(now + Duration::from_secs(60));
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}
