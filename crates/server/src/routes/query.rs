//! `POST /v1/query`: an aggregate question through the access policies and the privacy
//! gate, audited by digest like the CLI's `blindwatch query`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_audit::Purpose;
use blindwatch_engine::Engine;
use blindwatch_query::{QueryError, QueryResult};

use crate::auth::{Caller, audit_principal};
use crate::problem::{ApiJson, Problem};
use crate::state::AppState;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    sql: String,
    purpose: String,
}

pub async fn query(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(request): ApiJson<QueryRequest>,
) -> Result<Json<QueryResult>, Problem> {
    let purpose = Purpose::new(&request.purpose)
        .map_err(|e| Problem::bad_request(format!("purpose: {e}")))?;
    let principal = audit_principal(&user)?;
    if let Err(p) = state.authorize(
        &user,
        Action::Query,
        &Resource::Platform,
        &Context::default(),
    ) {
        let mut audit = state.audit.lock().await;
        blindwatch_query::audit_refusal(
            &request.sql,
            &purpose,
            &principal,
            "access-policy",
            &mut audit,
        )
        .map_err(|e| Problem::internal(&e))?;
        return Err(p);
    }
    let engine = Engine::open(&state.dir)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let refused = |e: QueryError| match e.rule() {
        Some(rule) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query-refused",
            e.to_string(),
        )
        .with_rule(rule),
        None => Problem::internal(&e),
    };
    // The work first; the audit log is held only to append the outcome.
    let answer = blindwatch_query::answer(&engine, &request.sql, &purpose, &state.gate, &principal)
        .await
        .map_err(refused)?;
    let mut audit = state.audit.lock().await;
    answer.audit(&mut audit).map(Json).map_err(refused)
}
