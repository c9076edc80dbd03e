//! `POST /v1/query`: an aggregate question through the access policies and the privacy
//! gate, audited by digest like the CLI's `blindwatch query`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_audit::{AuditEvent, AuditRecord, Purpose, ReasonCode};
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
    request: Result<ApiJson<QueryRequest>, Problem>,
) -> Result<Json<QueryResult>, Problem> {
    let principal = audit_principal(&user)?;
    // Refusals before the gate sees the query are audited here (the gate audits its own).
    let before_gate = |rule: &'static str, problem: Problem| {
        let state = state.clone();
        let principal = principal.clone();
        async move {
            let record = AuditRecord::now(
                principal.clone(),
                AuditEvent::RequestRefused {
                    principal,
                    action: ReasonCode::new("query").map_err(|e| Problem::internal(&e))?,
                    rule: ReasonCode::new(rule).map_err(|e| Problem::internal(&e))?,
                },
            );
            state.audit(vec![record]).await?;
            Err::<Json<QueryResult>, Problem>(problem.with_rule(rule))
        }
    };
    let request = match request {
        Ok(ApiJson(r)) => r,
        Err(p) => return before_gate("bad-body", p).await,
    };
    let purpose = match Purpose::new(&request.purpose) {
        Ok(p) => p,
        Err(e) => {
            return before_gate("bad-purpose", Problem::bad_request(format!("purpose: {e}"))).await;
        }
    };
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
    let engine = match Engine::open(&state.dir).await {
        Ok(e) => e,
        Err(e) => {
            let mut audit = state.audit.lock().await;
            blindwatch_query::audit_refusal(
                &request.sql,
                &purpose,
                &principal,
                "platform-failure",
                &mut audit,
            )
            .map_err(|e| Problem::internal(&e))?;
            return Err(Problem::internal(&e));
        }
    };
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
