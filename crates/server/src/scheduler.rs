//! Model runs: on demand (`POST /v1/models/run`) and on each model's schedule.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use blindwatch_audit::Principal;
use blindwatch_engine::Engine;
use blindwatch_models::{
    Counts, Model, Registry, RegistryError, RunSummary, evaluate, load_dir, record_run,
};
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

/// Evaluates the registered models (or one) as of `now`, records their alerts (audited),
/// and publishes the changes to the live streams. Every model's checks and partners'
/// approvals are verified again first; if any fails, none runs (the refusal is audited).
/// Counts in the summaries are released only at `min_group_size` or more.
pub async fn run_models(
    state: &AppState,
    only: Option<&str>,
    now: DateTime<Utc>,
    actor: &Principal,
) -> Result<Vec<RunSummary>, Problem> {
    let _writer = state.writer.lock().await;
    let models = load_dir(&state.dir.models_dir()).map_err(|e| {
        Problem::unprocessable(
            "model-refused",
            format!(
                "a registered model no longer loads: {}",
                e.first().map_or_else(String::new, ToString::to_string)
            ),
        )
    })?;
    let models: Vec<Model> = models
        .into_iter()
        .filter(|m| only.is_none_or(|id| m.id == id))
        .collect();
    if models.is_empty() {
        return Err(Problem::not_found("registered model"));
    }
    let mut engine = Engine::open(&state.dir)
        .await
        .map_err(|e| Problem::internal(&e))?;
    engine.set_clock(Some(now));
    let models_dir = state.dir.models_dir();
    let registry = Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    let k = state.gate.min_group_size;
    let mut summaries = Vec::new();
    let result = async {
        let mut approved = Vec::new();
        for model in models {
            let mut audit = state.audit.lock().await;
            let a = registry
                .approved_for_run(&mut audit, actor, model)
                .await
                .map_err(|e| registry_problem(&e))?;
            approved.push(a);
        }
        for a in &approved {
            let evaluation = evaluate(&engine, a, &state.pseudonyms, now)
                .await
                .map_err(|e| Problem::internal(&e))?;
            let counts = Counts::of(&evaluation);
            let mut audit = state.audit.lock().await;
            let outcome = record_run(&state.alerts, &mut audit, actor, a.model(), evaluation, now)
                .await
                .map_err(|e| Problem::internal(&e))?;
            drop(audit);
            state.metrics.model_runs.fetch_add(1, Ordering::Relaxed);
            summaries.push(RunSummary::new(a.model(), counts, &outcome, k));
        }
        Ok::<(), Problem>(())
    }
    .await;
    // Whatever was recorded before a failure is real: stream it.
    state.fanout.publish(&state.alerts).await;
    if let Err(e) = state.audit.lock().await.checkpoint() {
        tracing::error!(error = %e, "audit checkpoint after model runs failed");
    }
    result.map(|()| summaries)
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
        let models = load_dir(&state.dir.models_dir()).unwrap_or_default();
        let now = tokio::time::Instant::now();
        for m in &models {
            let at = *due.entry(m.id.clone()).or_insert(now);
            if at <= now {
                let when = as_of
                    .and_then(|d| d.and_hms_opt(12, 0, 0))
                    .map_or_else(Utc::now, |t| t.and_utc());
                match run_models(&state, Some(&m.id), when, &actor).await {
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
