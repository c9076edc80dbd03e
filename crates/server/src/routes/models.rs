//! Warning models over the API: list, check, register, run (specialists); approvals
//! (partners, for models that read their own datasets).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Principal, Resource};
use blindwatch_engine::Engine;
use blindwatch_models::approval::readers;
use blindwatch_models::{CheckedModel, Model, Registry, RunSummary, Submission, load_dir};

use crate::auth::Caller;
use crate::problem::{ApiJson, Problem};
use crate::scheduler::{registry_problem, run_models};
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
    /// Tables the model reads (known once checked).
    reads: Vec<String>,
    /// The digest partners approve (`blindwatch model approve`).
    digest: String,
    /// Partners whose approval the model needs (the owners of what it reads).
    approvers: Vec<String>,
}

fn info(model: &Model, checked: Option<&CheckedModel>, engine: Option<&Engine>) -> ModelInfo {
    let (reads, approvers) = match (checked, engine) {
        (Some(c), Some(e)) => (
            c.plan().released().keys().cloned().collect(),
            readers(c, e.contracts()).into_iter().collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    ModelInfo {
        id: model.id.clone(),
        version: model.version,
        category: model.category.as_str(),
        title_zh: model.title.zh.clone(),
        title_en: model.title.en.clone(),
        purpose: model.purpose.to_string(),
        schedule_seconds: model.schedule.as_secs(),
        keep_for: model.keep_for,
        tiers: model.tiers.len(),
        evidence: model.evidence.clone(),
        reads,
        digest: model.digest().to_string(),
        approvers,
    }
}

fn model_resource(id: &str) -> Resource {
    Resource::Model { id: id.to_owned() }
}

/// Parses a posted model far enough to authorise the caller for it.
fn parse(text: &str) -> Result<Model, Problem> {
    Model::parse_posted(text)
        .map_err(|e| registry_problem(&blindwatch_models::RegistryError::Refused(e)))
}

async fn engine(state: &AppState) -> Result<Engine, Problem> {
    state.engine().await.map_err(|e| Problem::internal(&e))
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
    let models = load_dir(&state.dir.models_dir())
        .map_err(|e| registry_problem(&blindwatch_models::RegistryError::Refused(e)))?;
    Ok(Json(models.iter().map(|m| info(m, None, None)).collect()))
}

/// `POST /v1/models/check` with the model file as the body.
pub async fn check(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: String,
) -> Result<Json<ModelInfo>, Problem> {
    let model = parse(&body)?;
    state.authorize(
        &user,
        Action::CheckModel,
        &model_resource(&model.id),
        &Context::default(),
    )?;
    let engine = engine(&state).await?;
    let checked = blindwatch_models::check(model, &engine)
        .await
        .map_err(|e| registry_problem(&blindwatch_models::RegistryError::Refused(e)))?;
    Ok(Json(info(checked.model(), Some(&checked), Some(&engine))))
}

/// `POST /v1/models/register` with the model file as the body: checked, every partner whose
/// data it reads must have approved this exact text (`POST /v1/models/{id}/approvals`),
/// then installed and audited. A refusal names the missing partners.
pub async fn register(
    State(state): State<AppState>,
    Caller(user): Caller,
    body: Result<String, axum::extract::rejection::StringRejection>,
) -> Result<(StatusCode, Json<ModelInfo>), Problem> {
    let actor = crate::auth::audit_principal(&user)?;
    // Refusals before the registry sees the model are audited here; the registry audits its
    // own (a model that does not check, missing approvals).
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let problem = Problem::bad_request(format!("the body is not a model file: {e}"))
                .with_rule("bad-body");
            return Err(attempt_refused(&state, &actor, None, problem).await);
        }
    };
    let model = match parse(&body) {
        Ok(m) => m,
        Err(p) => {
            let problem = p.with_rule("model-refused");
            return Err(attempt_refused(&state, &actor, None, problem).await);
        }
    };
    if let Err(p) = state.authorize(
        &user,
        Action::RegisterModel,
        &model_resource(&model.id),
        &Context::default(),
    ) {
        let problem = p.with_rule("access-policy");
        return Err(attempt_refused(&state, &actor, Some(&model.id), problem).await);
    }
    let _writer = state.writer.lock().await;
    let engine = engine(&state).await?;
    let models_dir = state.dir.models_dir();
    let registry = Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    // The registry checks first and holds the audit log only to append.
    let registered = registry
        .register(&state.audit, &actor, &body, &model.file, &[])
        .await;
    state
        .audit
        .lock()
        .await
        .checkpoint()
        .map_err(|e| Problem::internal(&e))?;
    let approved = registered.map_err(|e| registry_problem(&e))?;
    Ok((
        StatusCode::CREATED,
        Json(info(
            approved.model(),
            Some(approved.checked()),
            Some(&engine),
        )),
    ))
}

/// Audits a registration refused before the registry saw it; returns the refusal (or, when
/// the log cannot take it, an internal error: nothing unaudited passes silently).
async fn attempt_refused(
    state: &AppState,
    actor: &blindwatch_audit::Principal,
    model: Option<&str>,
    problem: Problem,
) -> Problem {
    let Ok(rule) =
        blindwatch_audit::ReasonCode::new(problem.rule.as_deref().unwrap_or("model-refused"))
    else {
        return problem;
    };
    let event = blindwatch_audit::AuditEvent::ModelRegistrationAttemptRefused {
        model: model.and_then(|m| blindwatch_audit::ModelId::new(m).ok()),
        principal: actor.clone(),
        rule,
    };
    let mut audit = state.audit.lock().await;
    match audit
        .append(&blindwatch_audit::AuditRecord::now(actor.clone(), event))
        .and_then(|_| audit.checkpoint().map(|_| ()))
    {
        Ok(()) => problem,
        Err(e) => Problem::internal(&e),
    }
}

#[derive(serde::Deserialize)]
pub struct ApprovalBody {
    /// The model file's text, exactly as approved.
    model: String,
    /// The DSSE envelope `blindwatch model approve` wrote.
    approval: serde_json::Value,
}

#[derive(serde::Serialize)]
pub struct ApprovalAccepted {
    model: String,
    version: u32,
    digest: String,
    partner: String,
}

/// `POST /v1/models/{id}/approvals` (partners): a partner's signed approval of a model that
/// reads its datasets. Cedar allows it only for the caller's own datasets; the signature
/// must verify under the key registered for the caller's partner. Accepted and refused
/// approvals are audited; a refused one stores nothing.
pub async fn approve(
    State(state): State<AppState>,
    Caller(user): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApprovalBody>,
) -> Result<(StatusCode, Json<ApprovalAccepted>), Problem> {
    let Some(Principal::Partner { name: partner }) = user.access_principal(&state.org) else {
        return Err(Problem::forbidden());
    };
    let model = parse(&body.model)?;
    if model.id != id {
        return Err(Problem::unprocessable(
            "model-refused",
            "the model file's id is not the id in the path: post the approval to /v1/models/<the model's id>/approvals",
        ));
    }
    let actor = crate::auth::audit_principal(&user)?;
    let _writer = state.writer.lock().await;
    let engine = engine(&state).await?;
    let checked = blindwatch_models::check(model, &engine)
        .await
        .map_err(|e| registry_problem(&blindwatch_models::RegistryError::Refused(e)))?;
    authorize_approval(&state, &user, &engine, &checked)?;
    let models_dir = state.dir.models_dir();
    let registry = Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    let envelope = serde_json::to_vec(&body.approval).map_err(|e| Problem::internal(&e))?;
    let submitted = registry
        .submit_approvals(
            &state.audit,
            &actor,
            &checked,
            &[Submission {
                source_name: "approval".into(),
                envelope: &envelope,
            }],
            Some(&partner),
        )
        .await;
    state
        .audit
        .lock()
        .await
        .checkpoint()
        .map_err(|e| Problem::internal(&e))?;
    submitted.map_err(|e| registry_problem(&e))?;
    tracing::info!(model = %checked.model().id, %partner, "model approval stored");
    Ok((
        StatusCode::CREATED,
        Json(ApprovalAccepted {
            model: checked.model().id.clone(),
            version: checked.model().version,
            digest: checked.model().digest().to_string(),
            partner,
        }),
    ))
}

/// A partner approves only for its own data: Cedar must allow `approve_model` on at least
/// one dataset the model reads.
fn authorize_approval(
    state: &AppState,
    user: &User,
    engine: &Engine,
    checked: &CheckedModel,
) -> Result<(), Problem> {
    let allowed = checked.plan().analysis().tables.iter().any(|table| {
        engine.contracts().get(table).is_ok_and(|c| {
            state
                .authorize(
                    user,
                    Action::ApproveModel,
                    &Resource::Dataset {
                        name: table.clone(),
                        partner: c.partner.clone(),
                    },
                    &Context::default(),
                )
                .is_ok()
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(Problem::forbidden())
    }
}

#[derive(serde::Deserialize)]
pub struct RunParams {
    model: Option<String>,
    /// Evaluate as of this day (what `current_date` means).
    as_of: Option<chrono::NaiveDate>,
}

/// `POST /v1/models/run[?model=ID][&as_of=YYYY-MM-DD]`: evaluate now, record alerts. The
/// summary's counts read "fewer than k" below `min_group_size`.
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
    // DataFusion's timestamps are i64 nanoseconds (1677 to 2262): a day outside is refused
    // before anything runs, not failed inside the run.
    if let Some(d) = params.as_of {
        let earliest = chrono::NaiveDate::from_ymd_opt(1970, 1, 1);
        let latest = chrono::NaiveDate::from_ymd_opt(2199, 12, 31);
        if earliest.is_some_and(|e| d < e) || latest.is_some_and(|l| d > l) {
            return Err(Problem::unprocessable(
                "bad-as-of",
                "as_of is a day from 1970-01-01 to 2199-12-31",
            )
            .with_rule("bad-as-of"));
        }
    }
    let now = blindwatch_models::run_time(params.as_of);
    let actor = crate::auth::audit_principal(&user)?;
    let summaries = run_models(&state, params.model.as_deref(), now, &actor).await?;
    Ok(Json(summaries))
}
