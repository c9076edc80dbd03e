//! `POST /v1/query`: an aggregate question through the access policies and the privacy
//! gate, audited by digest like the CLI's `blindwatch query`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use blindwatch_access::{Action, Context, Resource};
use blindwatch_audit::{AuditEvent, AuditRecord, Purpose, ReasonCode};
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
    let mut engine = match state.engine().await {
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
    // An execution over the pool's bound is refused (rule `execution`), not the process.
    engine.set_memory_limit(Some(state.limits.query_memory_bytes));
    let refused = |e: QueryError| match e.rule() {
        Some(rule) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query-refused",
            e.to_string(),
        )
        .with_rule(rule),
        None => Problem::internal(&e),
    };
    // The work first, on a task of its own so that the time limit can cancel it (dropping
    // DataFusion's streams stops the execution); the audit log is held only to append the
    // outcome.
    let mut work = tokio::spawn({
        let state = state.clone();
        let sql = request.sql.clone();
        let purpose = purpose.clone();
        let principal = principal.clone();
        async move { blindwatch_query::answer(&engine, &sql, &purpose, &state.gate, &principal).await }
    });
    let answer = match tokio::time::timeout(state.limits.query_timeout, &mut work).await {
        Ok(Ok(answer)) => answer.map_err(refused)?,
        Ok(Err(e)) => return Err(Problem::internal(&e)),
        Err(_) => {
            work.abort();
            let mut audit = state.audit.lock().await;
            blindwatch_query::audit_refusal(
                &request.sql,
                &purpose,
                &principal,
                "query-timeout",
                &mut audit,
            )
            .map_err(|e| Problem::internal(&e))?;
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query-timeout",
                format!(
                    "the query did not finish within the server's query time limit ({} s) and was cancelled; nothing was released, and the budget it needed may already be spent. Ask a narrower question",
                    state.limits.query_timeout.as_secs_f64()
                ),
            )
            .with_rule("query-timeout"));
        }
    };
    let mut audit = state.audit.lock().await;
    answer.audit(&mut audit).map(Json).map_err(refused)
}
