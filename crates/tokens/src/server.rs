//! The token authority's HTTP service (axum).
//!
//! - `GET /v1/key` → `{"key_id": "…", "mode": "oprf", "suite": "ristretto255-SHA512"}`
//! - `POST /v1/evaluate`, body: concatenated 32-byte blinded elements, signed headers (see
//!   [`crate::auth`]) → 200 with the evaluated elements in the same order and the key id in
//!   `x-blindwatch-key-id`; or a refusal `{"error": "…"}`: 400 malformed, 401 not
//!   authenticated, 413 too many elements, 429 over quota, 503 audit log unavailable.
//!
//! Order of checks: authentication (partner known, time in window, signature, fresh nonce)
//! → shape (element count, every element decodes) → quota (reserved atomically; a request
//! over quota is refused whole and nothing is evaluated) → evaluation → audit entry
//! (partner and count, never the elements) → answer. If the audit entry cannot be written
//! the answer is withheld and the quota released.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_audit::{AuditEvent, AuditLog, AuditRecord, PartnerId, Principal};
use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{AuthorityKey, ELEMENT_LEN, OPRF_MODE, OPRF_SUITE};
use blindwatch_crypto::sign::VerifyingKey;
use chrono::NaiveDate;

use crate::AuthorityError;
use crate::auth::{self, NonceBook};
use crate::policy::{Limits, Quotas};

/// Why a request was refused. Messages say what was wrong and what to do, and never carry
/// an element, a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    OverQuota(String),
    #[error("{0}")]
    Unavailable(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::OverQuota(_) => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub today: u64,
    pub total: u64,
}

struct Usage {
    day: NaiveDate,
    by_partner: HashMap<String, Used>,
}

impl Usage {
    fn roll(&mut self, today: NaiveDate) {
        if today != self.day {
            self.day = today;
            for used in self.by_partner.values_mut() {
                used.today = 0;
            }
        }
    }
}

/// The token authority: the OPRF key, the partners it serves, their quotas and usage, and
/// its audit log.
pub struct Authority {
    key: AuthorityKey,
    quotas: Quotas,
    partners: RwLock<BTreeMap<String, VerifyingKey>>,
    usage: Mutex<Usage>,
    nonces: Mutex<NonceBook>,
    audit: Mutex<Option<AuditLog>>,
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

impl Authority {
    /// Sets up the authority. With an audit log, usage so far (per partner, today and in
    /// total) is recounted from its `token_evaluation_batch` entries, so quotas survive
    /// restarts; without one, usage starts at zero.
    pub fn new(
        key: AuthorityKey,
        quotas: Quotas,
        partners: BTreeMap<String, VerifyingKey>,
        audit: Option<AuditLog>,
    ) -> Result<Authority, AuthorityError> {
        let day = today();
        let mut by_partner: HashMap<String, Used> = HashMap::new();
        if let Some(log) = &audit {
            for index in 0..log.size() {
                let record = log.record(index)?;
                if let AuditEvent::TokenEvaluationBatch { partner, count } = &record.event {
                    let used = by_partner.entry(partner.as_str().to_owned()).or_default();
                    used.total = used.total.saturating_add(*count);
                    if record.time.as_datetime().date_naive() == day {
                        used.today = used.today.saturating_add(*count);
                    }
                }
            }
        }
        Ok(Authority {
            key,
            quotas,
            partners: RwLock::new(partners),
            usage: Mutex::new(Usage { day, by_partner }),
            nonces: Mutex::new(NonceBook::default()),
            audit: Mutex::new(audit),
        })
    }

    pub fn key_id(&self) -> &KeyId {
        self.key.key_id()
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Lets `partner` ask for evaluations, authenticated by `key`.
    pub fn register_partner(
        &self,
        partner: &str,
        key: &VerifyingKey,
    ) -> Result<(), AuthorityError> {
        crate::registry::check_partner_name(partner)?;
        self.partners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(partner.to_owned(), key.clone());
        Ok(())
    }

    /// What `partner` has used so far.
    pub fn usage(&self, partner: &str) -> Used {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage.roll(today());
        usage.by_partner.get(partner).copied().unwrap_or_default()
    }

    /// Takes the audit log out (on shutdown), signing a checkpoint first.
    pub fn take_audit_log(&self) -> Result<Option<AuditLog>, AuthorityError> {
        let mut guard = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = guard.as_mut() {
            log.checkpoint()?;
        }
        Ok(guard.take())
    }

    /// Signs a checkpoint of the audit log, if there is one.
    pub fn checkpoint(&self) -> Result<(), AuthorityError> {
        let mut guard = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = guard.as_mut() {
            log.checkpoint()?;
        }
        Ok(())
    }

    /// Checks the request's authentication headers; returns the partner.
    pub fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
        let get = |name: &str| -> Result<&str, Refusal> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Refusal::Unauthenticated(format!(
                        "the request has no `{name}` header: sign requests with the partner's key (blindwatch partner seal does)"
                    ))
                })
        };
        let partner = get(auth::HEADER_PARTNER)?;
        let key = self
            .partners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(partner)
            .cloned()
            .ok_or_else(|| {
                Refusal::Unauthenticated(
                    "this partner is not registered with the token authority: ask its operator to run `blindwatch tokens add-partner`".into(),
                )
            })?;
        let time: i64 = get(auth::HEADER_TIME)?
            .parse()
            .map_err(|_| Refusal::Unauthenticated("the request time is not a number".into()))?;
        let now = chrono::Utc::now().timestamp();
        if (now - time).abs() > auth::MAX_CLOCK_SKEW_SECS {
            return Err(Refusal::Unauthenticated(format!(
                "the request time is more than {} s from the authority's clock: check the partner machine's clock",
                auth::MAX_CLOCK_SKEW_SECS
            )));
        }
        let nonce = get(auth::HEADER_NONCE)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Refusal::Unauthenticated(
                "the request nonce must be 32 hex digits".into(),
            ));
        }
        let signature = B64
            .decode(get(auth::HEADER_SIGNATURE)?)
            .map_err(|_| Refusal::Unauthenticated("the request signature is not base64".into()))?;
        if !key.verify(
            &auth::signed_message(partner, time, nonce, body),
            &signature,
        ) {
            return Err(Refusal::Unauthenticated(format!(
                "the request signature does not verify with partner `{partner}`'s registered key (key {}): sign with that key, or re-register the partner's new key",
                key.id()
            )));
        }
        let fresh = self
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(partner, nonce, time, now);
        if !fresh {
            return Err(Refusal::Unauthenticated(
                "this request was seen before (replayed nonce): send a new request".into(),
            ));
        }
        Ok(partner.to_owned())
    }

    /// Reserves `count` elements of `partner`'s quota, or refuses saying which limit.
    fn reserve(&self, partner: &str, count: u64) -> Result<(), Refusal> {
        let limits: Limits = self.quotas.limits_for(partner);
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage.roll(today());
        let used = usage.by_partner.entry(partner.to_owned()).or_default();
        if used.today.saturating_add(count) > limits.per_day {
            return Err(Refusal::OverQuota(format!(
                "over the daily quota: partner `{partner}` has used {} of {} elements today and asked for {count}; nothing was evaluated — try again tomorrow (UTC) or ask the authority's operator to raise `per_day` in policies/privacy.toml",
                used.today, limits.per_day
            )));
        }
        if used.total.saturating_add(count) > limits.total {
            return Err(Refusal::OverQuota(format!(
                "over the total quota: partner `{partner}` has used {} of {} elements and asked for {count}; nothing was evaluated — ask the authority's operator to raise `total` in policies/privacy.toml",
                used.total, limits.total
            )));
        }
        used.today += count;
        used.total += count;
        Ok(())
    }

    fn release(&self, partner: &str, count: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(used) = usage.by_partner.get_mut(partner) {
            used.today = used.today.saturating_sub(count);
            used.total = used.total.saturating_sub(count);
        }
    }

    /// Handles one evaluation request completely (blocking: run it off the async workers).
    pub fn handle_evaluate(&self, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Refusal> {
        let partner = self.authenticate(headers, body)?;
        if body.is_empty() || !body.len().is_multiple_of(ELEMENT_LEN) {
            return Err(Refusal::Malformed(format!(
                "the body must be one or more {ELEMENT_LEN}-byte blinded elements ({} bytes received)",
                body.len()
            )));
        }
        let count = body.len() / ELEMENT_LEN;
        if count > self.quotas.max_batch {
            return Err(Refusal::TooLarge(format!(
                "{count} elements in one request; the most is {}: send smaller batches",
                self.quotas.max_batch
            )));
        }
        // Every element must decode before any quota is used.
        let batch = blindwatch_crypto::blind::parse_blinded(body)
            .map_err(|e| Refusal::Malformed(format!("{e}; nothing was evaluated")))?;
        let count = count as u64;
        self.reserve(&partner, count)?;
        let evaluated = self.key.evaluate_batch(&batch);
        if let Err(e) = self.audit(&partner, count) {
            self.release(&partner, count);
            tracing::error!(partner = %partner, count, error = %e, "token batch not audited; answer withheld");
            return Err(Refusal::Unavailable(
                "the token authority cannot write its audit log, so nothing was returned: try again later".into(),
            ));
        }
        tracing::info!(partner = %partner, count, key_id = %self.key.key_id(), "token batch evaluated");
        Ok(evaluated)
    }

    fn audit(&self, partner: &str, count: u64) -> Result<(), AuthorityError> {
        let mut guard = self.audit.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = guard.as_mut() {
            log.append(&AuditRecord::now(
                Principal::new(format!("partner:{partner}"))?,
                AuditEvent::TokenEvaluationBatch {
                    partner: PartnerId::new(partner)?,
                    count,
                },
            ))?;
        }
        Ok(())
    }

    /// The HTTP routes.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.quotas.max_batch * ELEMENT_LEN + 1024;
        Router::new()
            .route(auth::KEY_PATH, get(key_info))
            .route(auth::EVALUATE_PATH, post(evaluate))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }
}

async fn key_info(State(authority): State<Arc<Authority>>) -> Response {
    let body = serde_json::json!({
        "key_id": authority.key_id().as_str(),
        "mode": OPRF_MODE,
        "suite": OPRF_SUITE,
    })
    .to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn evaluate(
    State(authority): State<Arc<Authority>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key_id = authority.key_id().clone();
    let answer =
        tokio::task::spawn_blocking(move || authority.handle_evaluate(&headers, &body)).await;
    match answer {
        Ok(Ok(elements)) => {
            let mut response = (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                elements,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(key_id.as_str()) {
                response.headers_mut().insert(auth::HEADER_KEY_ID, v);
            }
            response
        }
        Ok(Err(refusal)) => {
            tracing::warn!(status = refusal.status().as_u16(), reason = %refusal, "token request refused");
            refusal.into_response()
        }
        Err(_) => {
            Refusal::Unavailable("the evaluation task failed: try again".into()).into_response()
        }
    }
}

/// Serves `authority` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    authority: Arc<Authority>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, authority.router())
        .with_graceful_shutdown(shutdown)
        .await
}
