//! Warning models over the API: list, check, register, run (specialists).

use std::path::Path;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_audit::{AuditEvent, AuditRecord, ModelId};
use blindwatch_engine::Engine;
use blindwatch_models::{CheckedModel, Model, ModelError, load_dir};

use crate::auth::Caller;
use crate::problem::Problem;
use crate::scheduler::{RunSummary, run_models};
use crate::state::AppState;
use crate::users::User;

#[derive(serde::Serialize)]
pub struct ModelInfo {
    id: String,
    version: u32,
    category: &'static str,
    title_zh: String,
    title_en: String,
    purpose: String,
    schedule_seconds: u64,
    keep_for: u32,
    tiers: usize,
    evidence: Vec<String>,
    /// Tables the model reads.
    reads: Vec<String>,
}

fn info(model: &Model, reads: Vec<String>) -> ModelInfo {
    ModelInfo {
        id: model.id.clone(),
        version: model.version,
        category: model.category.as_str(),
        title_zh: model.title.zh.clone(),
        title_en: model.title.en.clone(),
        purpose: model.purpose.clone(),
        schedule_seconds: model.schedule.as_secs(),
        keep_for: model.keep_for,
        tiers: model.tiers.len(),
        evidence: model.evidence.clone(),
        reads,
    }
}

fn refused(errors: &[ModelError]) -> Problem {
    let list: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.reason))
        .collect();
    Problem::unprocessable(
        "model-refused",
        format!(
            "{} problem(s); nothing was changed: {}",
            errors.len(),
            list.join("; ")
        ),
    )
}

fn model_resource(id: &str) -> Resource {
    Resource::Model { id: id.to_owned() }
}

async fn check_text(
    state: &AppState,
    user: &User,
    action: Action,
    text: &str,
) -> Result<CheckedModel, Problem> {
    let model = Model::parse(text, Path::new("model.toml")).map_err(|e| refused(&e))?;
    state.authorize(
        user,
        action,
        &model_resource(&model.id),
        &Context::default(),
    )?;
    let engine = Engine::open(&state.dir)
        .await
        .map_err(|e| Problem::internal(&e))?;
    blindwatch_models::check(model, &engine)
        .await
        .map_err(|e| refused(&e))
}

/// `GET /v1/models`: the registered models.
pub async fn list(
    State(state): State<AppState>,
    Caller(user): Caller,
) -> Result<Json<Vec<ModelInfo>>, Problem> {
    state.authorize(
        &user,
        Action::CheckModel,
        &model_resource("*"),
        &Context::default(),
    )?;
    let models = load_dir(&state.dir.models_dir()).map_err(|e| refused(&e))?;
    Ok(Json(models.iter().map(|m| info(m, Vec::new())).collect()))
}

/// `POST /v1/models/check` with the model file as the body.
pub async fn check(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: String,
) -> Result<Json<ModelInfo>, Problem> {
    let checked = check_text(&state, &user, Action::CheckModel, &body).await?;
    let reads = checked.plan.released().keys().cloned().collect();
    Ok(Json(info(&checked.model, reads)))
}

/// `POST /v1/models/register` with the model file as the body: checked, installed, audited;
/// a refusal is audited with its rule.
pub async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: Result<String, axum::extract::rejection::StringRejection>,
) -> Result<(StatusCode, Json<ModelInfo>), Problem> {
    let principal = crate::auth::audit_principal(&user)?;
    let outcome = match &body {
        Ok(text) => register_checked(&state, &user, text).await,
        Err(e) => Err(
            Problem::bad_request(format!("the body is not a model file: {e}"))
                .with_rule("bad-body"),
        ),
    };
    if let Err(problem) = &outcome {
        let model = body
            .as_ref()
            .ok()
            // No file name here: the id is what the body says (a path would be compared).
            .and_then(|text| Model::parse(text, Path::new("")).ok())
            .and_then(|m| ModelId::new(m.id).ok());
        let rule = problem.rule.clone().unwrap_or_else(|| {
            problem
                .kind
                .strip_prefix("/problems/")
                .unwrap_or("internal")
                .to_owned()
        });
        state
            .audit(vec![AuditRecord::now(
                principal.clone(),
                AuditEvent::ModelRegistrationRefused {
                    model,
                    principal,
                    rule: blindwatch_audit::ReasonCode::new(rule)
                        .map_err(|e| Problem::internal(&e))?,
                },
            )])
            .await?;
    }
    outcome
}

async fn register_checked(
    state: &AppState,
    user: &User,
    body: &str,
) -> Result<(StatusCode, Json<ModelInfo>), Problem> {
    let checked = check_text(state, user, Action::RegisterModel, body).await?;
    let model = &checked.model;
    let id = ModelId::new(&model.id).map_err(|e| Problem::bad_request(e.to_string()))?;
    let _writer = state.writer.lock().await;
    state
        .audit(vec![AuditRecord::now(
            crate::auth::audit_principal(user)?,
            AuditEvent::ModelRegistered {
                model: id,
                version: model.version,
                tiers: model.tiers.len() as u32,
            },
        )])
        .await?;
    let target = state.dir.models_dir().join(format!("{}.toml", model.id));
    std::fs::create_dir_all(state.dir.models_dir()).map_err(|e| Problem::internal(&e))?;
    blindwatch_common::fsutil::replace(&target, body.as_bytes())
        .map_err(|e| Problem::internal(&e))?;
    tracing::info!(model = %model.id, version = model.version, "model registered");
    let reads = checked.plan.released().keys().cloned().collect();
    Ok((StatusCode::CREATED, Json(info(model, reads))))
}

#[derive(serde::Deserialize)]
pub struct RunParams {
    model: Option<String>,
    /// Evaluate as of this day (what `current_date` means).
    as_of: Option<chrono::NaiveDate>,
}

/// `POST /v1/models/run[?model=ID][&as_of=YYYY-MM-DD]`: evaluate now, record alerts.
pub async fn run(
    State(state): State<AppState>,
    Caller(user): Caller,
    Query(params): Query<RunParams>,
) -> Result<Json<Vec<RunSummary>>, Problem> {
    state.authorize(
        &user,
        Action::RunModel,
        &model_resource(params.model.as_deref().unwrap_or("*")),
        &Context::default(),
    )?;
    let now = params
        .as_of
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map_or_else(chrono::Utc::now, |t| t.and_utc());
    let actor = crate::auth::audit_principal(&user)?;
    let summaries = run_models(&state, params.model.as_deref(), now, &actor).await?;
    Ok(Json(summaries))
}
