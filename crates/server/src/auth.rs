//! Bearer-token authentication: every route but `/healthz`, `/metrics`, the OpenAPI
//! document and the console's static files needs a caller.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::problem::Problem;
use crate::state::AppState;
use crate::users::User;

/// The authenticated caller of a request.
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Problem> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(Problem::unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(Problem::unauthorized)?
            .trim();
        match state.users.authenticate(token).await {
            Ok(Some(user)) => {
                state.rate.take(&user.principal_name())?;
                Ok(Caller(user))
            }
            Ok(None) => {
                tracing::info!("request with an unknown or revoked token");
                Err(Problem::unauthorized())
            }
            Err(e) => Err(Problem::internal(&e)),
        }
    }
}

/// The caller as the audit log names them.
pub fn audit_principal(user: &User) -> Result<blindwatch_audit::Principal, Problem> {
    blindwatch_audit::Principal::new(user.principal_name()).map_err(|e| Problem::internal(&e))
}
