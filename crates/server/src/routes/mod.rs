//! The HTTP API (`/v1/...`), health, metrics and the officer console's files.

mod alerts;
mod me;
mod models;
mod query;
mod upload;

use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::AppState;

pub fn router(state: AppState, max_upload_bytes: usize) -> Router {
    let api = Router::new()
        .route("/v1/me", get(me::me))
        .route("/v1/alerts", get(alerts::list))
        .route("/v1/alerts/stream", get(crate::stream::stream))
        .route("/v1/alerts/{id}", get(alerts::one))
        .route("/v1/alerts/{id}/acknowledge", post(alerts::acknowledge))
        .route("/v1/alerts/{id}/assign", post(alerts::assign))
        .route("/v1/alerts/{id}/comment", post(alerts::comment))
        .route("/v1/alerts/{id}/close", post(alerts::close))
        .route("/v1/alerts/{id}/reveal", post(alerts::reveal))
        .route("/v1/subjects/{pseudonym}", get(alerts::subject))
        .route(
            "/v1/silences",
            get(alerts::silences).post(alerts::add_silence),
        )
        .route("/v1/silences/{id}/expire", post(alerts::expire_silence))
        .route("/v1/models", get(models::list))
        .route("/v1/models/check", post(models::check))
        .route("/v1/models/register", post(models::register))
        .route("/v1/models/run", post(models::run))
        .route("/v1/models/{id}/approvals", post(models::approve))
        .route("/v1/query", post(query::query))
        .route(
            "/v1/contributions",
            post(upload::upload).layer(DefaultBodyLimit::max(max_upload_bytes)),
        );
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(crate::openapi::document))
        .route("/", get(crate::console::page))
        .route("/console.js", get(crate::console::script))
        .route("/console.css", get(crate::console::style))
        .fallback(not_found)
        .layer(middleware::from_fn(problem_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.alerts.last_event_id().await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => crate::problem::Problem::internal(&e).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> crate::problem::Problem {
    crate::problem::Problem::not_found("route; see /v1/openapi.json")
}

/// Every refusal is a problem document: axum's own rejections (a query string or path that
/// does not parse, a body that is not UTF-8, a method the route does not take) are plain
/// text or empty and can quote the caller's input, so their bodies are replaced by a
/// problem for their status (headers such as `Allow` kept).
async fn problem_bodies(request: Request, next: Next) -> Response {
    use crate::problem::Problem;
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == "application/problem+json");
    if is_problem || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let problem = match status {
        StatusCode::BAD_REQUEST => Problem::bad_request(
            "the path or query string is not what this route takes, or the body is not UTF-8 text; see /v1/openapi.json",
        ),
        StatusCode::METHOD_NOT_ALLOWED => Problem::new(
            status,
            "method-not-allowed",
            "this route does not take this method; the Allow header lists those it takes",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
            status,
            "body-too-large",
            "the request body is larger than this route accepts; send a smaller one",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::new(
            status,
            "unsupported-media-type",
            "the body's Content-Type is not one this route takes; see /v1/openapi.json",
        ),
        s if s.is_server_error() => {
            tracing::error!(
                status = s.as_u16(),
                "a handler answered without a problem body"
            );
            Problem::new(
                s,
                "internal",
                "the server failed to handle the request; it was logged, try again later",
            )
        }
        _ => Problem::new(
            status,
            "refused",
            "the request was refused; see /v1/openapi.json for what this route takes",
        ),
    };
    let (mut parts, _) = response.into_parts();
    let fresh = problem.into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in fresh.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, fresh.into_body())
}

/// Counts and times each request by its route template (never the concrete path: it may
/// carry a pseudonym), and logs it with structured fields.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    state.metrics.observe(&route, &method, status, seconds);
    tracing::info!(%route, %method, status, ms = seconds * 1e3, "request");
    response
}
