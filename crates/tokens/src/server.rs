//! The token authority's HTTP service (axum), served by `blindwatch-net` (TLS, deadlines,
//! connection cap).
//!
//! - `GET /v1/key` → `{"key_id", "public_key" (base64), "mode": "voprf", "suite":
//!   "ristretto255-SHA512", "max_batch"}`
//! - `POST /v1/evaluate`, body: concatenated 32-byte blinded elements, signed headers (see
//!   [`crate::auth`]) → 200 with the batch's DLEQ proof (64 bytes) and the evaluated
//!   elements in the same order; or an RFC 9457 problem (`application/problem+json`): 400
//!   malformed, 401 not authenticated / clock / replay, 408 body too slow, 413 too many
//!   elements or too large a body, 429 over quota or rate limit (with `Retry-After`), 503
//!   audit log unavailable.
//!
//! Order of checks: header syntax → time window → partner and signature (one refusal for
//! both, same text and status, so a caller cannot tell registered names from unknown ones)
//! → replay (nonce seen) → the partner's rate → shape (element count, every element decodes)
//! → quota (reserved atomically; a request over quota is refused whole and nothing is
//! evaluated) → the nonce is recorded → evaluation → audit entry (partner, count and the
//! nonce's digest, never the elements) → answer. Refused requests leave no nonce behind. If
//! the audit entry cannot be written the answer is withheld and the quota released.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_audit::{AuditEvent, AuditLog, AuditRecord, PartnerId, Principal, Sha256Digest};
use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{
    AuthorityKey, AuthorityPublicKey, ELEMENT_LEN, OPRF_MODE, OPRF_SUITE,
};
use blindwatch_crypto::sign::{SigningKey, VerifyingKey};
use blindwatch_net::problem::{self, Problem};
use chrono::NaiveDate;

use crate::auth::{self, NonceBook};
use crate::ledger::{self, Usage, Used};
use crate::policy::{Limits, Quotas};
use crate::{AuthorityDir, AuthorityError};

/// The one answer to an unknown partner and to a signature that does not verify.
pub const NOT_AUTHENTICATED: &str = "the request is not authenticated: the partner is not registered with this token authority, or the signature does not verify with its registered key for this authority's key; sign with the key registered by `blindwatch tokens add-partner`, for the key this authority serves (blindwatch partner seal does both)";

/// Why a request was refused. Messages say what was wrong and what to do, and never carry
/// an element, a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{NOT_AUTHENTICATED}")]
    NotAuthenticated,
    #[error("{0}")]
    BadHeaders(String),
    #[error(
        "the request time is more than {} s from the authority's clock: check the partner machine's clock",
        auth::MAX_CLOCK_SKEW_SECS
    )]
    ClockSkew,
    #[error("this request was seen before (replayed nonce): send a new request")]
    Replayed,
    #[error(
        "too many requests from this partner: at most {per_second} per second (bursts of {burst}); try again in {retry_after} s"
    )]
    RateLimited {
        per_second: u32,
        burst: u32,
        retry_after: u64,
    },
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
        self.problem().status_code()
    }

    pub fn problem(&self) -> Problem {
        let (status, code) = match self {
            Refusal::NotAuthenticated => (StatusCode::UNAUTHORIZED, "not-authenticated"),
            Refusal::BadHeaders(_) => (StatusCode::UNAUTHORIZED, "bad-authentication-headers"),
            Refusal::ClockSkew => (StatusCode::UNAUTHORIZED, "clock-skew"),
            Refusal::Replayed => (StatusCode::UNAUTHORIZED, "replayed"),
            Refusal::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            Refusal::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            Refusal::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too-many-elements"),
            Refusal::OverQuota(_) => (StatusCode::TOO_MANY_REQUESTS, "over-quota"),
            Refusal::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        };
        let problem = Problem::new(status, code, self.to_string());
        match self {
            Refusal::RateLimited { retry_after, .. } => problem.retry_after(*retry_after),
            _ => problem,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// The audit log and the usage it records (so a checkpoint's ledger matches the log).
struct Journal {
    log: AuditLog,
    logged: Usage,
}

/// The token authority: the VOPRF key, the partners it serves, their quotas, rates and
/// usage, the replay book, and its audit log and ledger.
pub struct Authority {
    key: AuthorityKey,
    quotas: Quotas,
    dir: AuthorityDir,
    partners: RwLock<BTreeMap<String, VerifyingKey>>,
    /// Reserved usage (the logged usage plus requests being evaluated).
    usage: Mutex<Usage>,
    nonces: Mutex<NonceBook>,
    /// Per-partner token buckets at the quotas' rate.
    rates: blindwatch_net::RateLimiter,
    journal: Mutex<Journal>,
    /// Verifies the signature of an unknown partner, so that refusal takes as long as a bad
    /// signature's.
    decoy: VerifyingKey,
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Authority {
    /// Starts the authority of `dir`: its registered partners (every name under
    /// `[token_authority.partners]` must be one), its audit log (refused if it is missing or
    /// shorter than the ledger says), usage recovered from the ledger and the log, and the
    /// nonces of requests recent enough to be replayed.
    pub fn open(
        dir: AuthorityDir,
        key: AuthorityKey,
        quotas: Quotas,
    ) -> Result<Authority, AuthorityError> {
        let partners = dir.partners()?;
        quotas.check_partners(partners.keys().map(String::as_str))?;
        let log = dir.open_audit_log()?;
        let logged = ledger::recover(&dir.ledger_file(), &log, today())?;
        let now = now();
        let mut nonces = NonceBook::default();
        for (digest, at) in ledger::recent_nonces(&log, now)?.into_iter().rev() {
            nonces.insert(&digest, at, now);
        }
        ledger::write(&dir.ledger_file(), &log, &logged)?;
        tracing::info!(
            entries = log.size(),
            nonces = nonces.len(),
            "token authority state recovered"
        );
        let rates =
            blindwatch_net::RateLimiter::new(f64::from(quotas.rate.per_second), quotas.rate.burst);
        Ok(Authority {
            key,
            quotas,
            dir,
            partners: RwLock::new(partners),
            usage: Mutex::new(logged.clone()),
            nonces: Mutex::new(nonces),
            rates,
            journal: Mutex::new(Journal { log, logged }),
            decoy: SigningKey::generate()?.verifying_key(),
        })
    }

    pub fn key_id(&self) -> &KeyId {
        self.key.key_id()
    }

    pub fn public_key(&self) -> &AuthorityPublicKey {
        self.key.public_key()
    }

    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    pub fn dir(&self) -> &AuthorityDir {
        &self.dir
    }

    /// Lets `partner` ask for evaluations, authenticated by `key` (in memory; the register
    /// file is `AuthorityDir::add_partner`). A key that is another partner's is refused.
    pub fn register_partner(
        &self,
        partner: &str,
        key: &VerifyingKey,
    ) -> Result<(), AuthorityError> {
        crate::registry::check_partner_name(partner)?;
        let mut partners = self
            .partners
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        crate::registry::check_key_unused(&partners, partner, key)?;
        partners.insert(partner.to_owned(), key.clone());
        Ok(())
    }

    /// What `partner` has used so far.
    pub fn usage(&self, partner: &str) -> Used {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage.roll(today());
        usage.get(partner)
    }

    /// Signs a checkpoint of the audit log and writes the ledger for it; returns the
    /// checkpoint's text (a C2SP signed note).
    pub fn checkpoint(&self) -> Result<String, AuthorityError> {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let checkpoint = journal.log.checkpoint()?;
        journal.logged.roll(today());
        ledger::write(&self.dir.ledger_file(), &journal.log, &journal.logged)?;
        Ok(checkpoint.text().to_owned())
    }

    /// Nonces of accepted requests held for replay detection.
    pub fn nonces_kept(&self) -> usize {
        self.nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Reads the audit log (tests, benchmarks, reports).
    pub fn with_audit_log<R>(&self, f: impl FnOnce(&AuditLog) -> R) -> R {
        let journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        f(&journal.log)
    }

    /// Checks the request's authentication; returns the partner and the nonce's digest.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(String, Sha256Digest), Refusal> {
        let get = |name: &str| -> Result<&str, Refusal> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Refusal::BadHeaders(format!(
                        "the request has no `{name}` header: sign requests with the partner's key (blindwatch partner seal does)"
                    ))
                })
        };
        let partner = get(auth::HEADER_PARTNER)?;
        let time = auth::parse_time(get(auth::HEADER_TIME)?).ok_or_else(|| {
            Refusal::BadHeaders("the request time must be unix seconds (digits only)".into())
        })?;
        if !auth::within_window(time, now) {
            return Err(Refusal::ClockSkew);
        }
        let nonce = get(auth::HEADER_NONCE)?;
        if !auth::valid_nonce(nonce) {
            return Err(Refusal::BadHeaders(
                "the request nonce must be 32 lowercase hex digits".into(),
            ));
        }
        let signature = B64
            .decode(get(auth::HEADER_SIGNATURE)?)
            .map_err(|_| Refusal::BadHeaders("the request signature is not base64".into()))?;
        let message = auth::signed_message(self.key_id(), partner, time, nonce, body);
        let key = self
            .partners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(partner)
            .cloned();
        let verified = match &key {
            Some(key) => key.verify(&message, &signature),
            None => {
                let _ = self.decoy.verify(&message, &signature);
                false
            }
        };
        if !verified {
            return Err(Refusal::NotAuthenticated);
        }
        Ok((partner.to_owned(), auth::nonce_digest(partner, nonce)))
    }

    fn check_rate(&self, partner: &str) -> Result<(), Refusal> {
        let rate = self.quotas.rate;
        self.rates
            .take(partner)
            .map_err(|retry_after| Refusal::RateLimited {
                per_second: rate.per_second,
                burst: rate.burst,
                retry_after,
            })
    }

    /// Reserves `count` elements of `partner`'s quota, or refuses saying which limit.
    fn reserve(&self, partner: &str, count: u64) -> Result<(), Refusal> {
        let limits: Limits = self.quotas.limits_for(partner);
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        usage.roll(today());
        let used = usage.get(partner);
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
        let day = usage.day;
        usage.add(partner, count, day);
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
        let now = now();
        let (partner, nonce) = self.authenticate(headers, body, now)?;
        if self
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&nonce, now)
        {
            return Err(Refusal::Replayed);
        }
        self.check_rate(&partner)?;
        if body.is_empty() || !body.len().is_multiple_of(ELEMENT_LEN) {
            return Err(Refusal::Malformed(format!(
                "the body must be one or more {ELEMENT_LEN}-byte blinded elements ({} bytes received)",
                body.len()
            )));
        }
        let count = body.len() / ELEMENT_LEN;
        if count > self.quotas.max_batch {
            return Err(Refusal::TooLarge(format!(
                "{count} elements in one request; this authority's max_batch is {}: send smaller batches (GET {} says how many)",
                self.quotas.max_batch,
                auth::KEY_PATH
            )));
        }
        // Every element must decode before any quota is used.
        let batch = blindwatch_crypto::blind::parse_blinded(body)
            .map_err(|e| Refusal::Malformed(format!("{e}; nothing was evaluated")))?;
        let count = count as u64;
        self.reserve(&partner, count)?;
        let fresh = self
            .nonces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&nonce, now, now);
        if !fresh {
            self.release(&partner, count);
            return Err(Refusal::Replayed);
        }
        let evaluated = match self.key.evaluate_batch(&batch) {
            Ok(e) => e,
            Err(e) => {
                self.release(&partner, count);
                return Err(Refusal::Malformed(format!("{e}; nothing was evaluated")));
            }
        };
        if let Err(e) = self.audit(&partner, count, nonce) {
            self.release(&partner, count);
            tracing::error!(partner = %partner, count, error = %e, "token batch not audited; answer withheld");
            return Err(Refusal::Unavailable(
                "the token authority cannot write its audit log, so nothing was returned: try again later".into(),
            ));
        }
        tracing::info!(partner = %partner, count, key_id = %self.key.key_id(), "token batch evaluated");
        Ok(evaluated)
    }

    fn audit(&self, partner: &str, count: u64, nonce: Sha256Digest) -> Result<(), AuthorityError> {
        let mut journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let record = AuditRecord::now(
            Principal::new(format!("partner:{partner}"))?,
            AuditEvent::TokenEvaluation {
                partner: PartnerId::new(partner)?,
                count,
                nonce,
            },
        );
        journal.log.append(&record)?;
        let day = record.time.as_datetime().date_naive();
        journal.logged.roll(today());
        journal.logged.add(partner, count, day);
        Ok(())
    }

    /// The HTTP routes. Bodies above `max_batch` elements are refused before they are read
    /// whole; every refusal is a problem document.
    pub fn router(self: Arc<Self>) -> Router {
        let limit = self.quotas.max_batch.saturating_mul(ELEMENT_LEN);
        Router::new()
            .route(auth::KEY_PATH, get(key_info))
            .route(auth::EVALUATE_PATH, post(evaluate))
            .fallback(problem::not_found)
            .method_not_allowed_fallback(problem::method_not_allowed)
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self)
    }
}

async fn key_info(State(authority): State<Arc<Authority>>) -> Response {
    let body = serde_json::json!({
        "key_id": authority.key_id().as_str(),
        "public_key": B64.encode(authority.public_key().as_bytes()),
        "mode": OPRF_MODE,
        "suite": OPRF_SUITE,
        "max_batch": authority.quotas.max_batch,
    })
    .to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn evaluate(
    State(authority): State<Arc<Authority>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let limit = format!(
                "{} elements ({} bytes), this authority's max_batch",
                authority.quotas.max_batch,
                authority.quotas.max_batch.saturating_mul(ELEMENT_LEN)
            );
            let problem = Problem::from_body_rejection(&rejection, &limit);
            tracing::warn!(status = problem.status, "token request body refused");
            return problem.into_response();
        }
    };
    let answer =
        tokio::task::spawn_blocking(move || authority.handle_evaluate(&headers, &body)).await;
    match answer {
        Ok(Ok(elements)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            elements,
        )
            .into_response(),
        Ok(Err(refusal)) => {
            tracing::warn!(status = refusal.status().as_u16(), reason = %refusal, "token request refused");
            refusal.into_response()
        }
        Err(_) => {
            Refusal::Unavailable("the evaluation task failed: try again".into()).into_response()
        }
    }
}
