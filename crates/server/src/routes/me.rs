//! `GET /v1/me`: who the bearer token belongs to, so a client (the officer console) can
//! label itself and scope its views.
//!
//! No Cedar decision: the answer is the caller's own account, which the token already
//! proves, plus the titles of the registered models, which name what the caller's alerts
//! already name by id (no query, no tables, no thresholds).

use axum::Json;
use axum::extract::State;
use blindwatch_models::load_dir;

use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;
use crate::users::Role;

#[derive(serde::Serialize)]
pub struct Me {
    name: String,
    role: Role,
    /// As the audit log and alert histories name the caller: `officer:li@S03`.
    principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    station: Option<String>,
    /// The station's county, from `policies/org.toml`.
    #[serde(skip_serializing_if = "Option::is_none")]
    county: Option<String>,
    /// A county duty officer (reads the county's red alerts).
    duty: bool,
    models: Vec<ModelTitle>,
}

#[derive(serde::Serialize)]
pub struct ModelTitle {
    id: String,
    title_zh: String,
    title_en: String,
}

pub async fn me(State(state): State<AppState>, Caller(user): Caller) -> Result<Json<Me>, Problem> {
    let county = user
        .station
        .as_deref()
        .and_then(|s| state.org.county_of(s))
        .map(str::to_owned);
    // A broken model file is the specialists' problem (they see it on /v1/models); here it
    // only costs the console its titles.
    let models = match load_dir(&state.dir.models_dir()) {
        Ok(models) => models
            .into_iter()
            .map(|m| ModelTitle {
                id: m.id,
                title_zh: m.title.zh,
                title_en: m.title.en,
            })
            .collect(),
        Err(errors) => {
            tracing::warn!(
                problems = errors.len(),
                "model titles unavailable: a registered model file does not load"
            );
            Vec::new()
        }
    };
    Ok(Json(Me {
        principal: user.principal_name(),
        name: user.name,
        role: user.role,
        station: user.station,
        county,
        duty: user.duty,
        models,
    }))
}
