//! The partner's HTTP transport to the token authority (ureq, blocking; safe to use from
//! inside or outside an async runtime). It sends only blinded elements and signs every
//! request with the partner's Ed25519 key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{
    BlindTokenizer, BlindTransport, CacheLocation, ELEMENT_LEN, Evaluation, OPRF_MODE, OPRF_SUITE,
};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::TokenError;
use serde::Deserialize;

use crate::auth;

/// The cache key file a partner keeps beside its token cache.
pub const CACHE_KEY_FILE: &str = "token-cache.key";

pub struct HttpTransport {
    agent: ureq::Agent,
    base: String,
    partner: String,
    key: Arc<SigningKey>,
}

#[derive(Deserialize)]
struct KeyInfo {
    key_id: String,
    mode: String,
    suite: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl HttpTransport {
    /// `url` is the authority's base URL, e.g. `http://127.0.0.1:7300`.
    pub fn new(
        url: &str,
        partner: &str,
        key: Arc<SigningKey>,
    ) -> Result<HttpTransport, TokenError> {
        let base = url.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(TokenError::Unreachable(format!(
                "the authority URL must start with http:// (got `{base}`); put a TLS proxy in front of the authority if the network needs one"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_global(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(32)
            .build()
            .into();
        Ok(HttpTransport {
            agent,
            base,
            partner: partner.to_owned(),
            key,
        })
    }

    fn unreachable(&self, e: ureq::Error) -> TokenError {
        TokenError::Unreachable(format!(
            "{} ({e}): check that `blindwatch tokens serve` runs there and the address is right",
            self.base
        ))
    }

    fn refusal(status: u16, body: &[u8]) -> TokenError {
        let why = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.error)
            .unwrap_or_else(|_| "no reason given".to_owned());
        match status {
            429 => TokenError::Refused(format!("over quota (HTTP 429): {why}")),
            401 | 403 => TokenError::Refused(format!("not authenticated (HTTP {status}): {why}")),
            400..=499 => TokenError::Refused(format!("HTTP {status}: {why}")),
            _ => TokenError::Unreachable(format!("the authority failed (HTTP {status}): {why}")),
        }
    }
}

impl BlindTransport for HttpTransport {
    fn key_id(&self) -> Result<KeyId, TokenError> {
        let url = format!("{}{}", self.base, auth::KEY_PATH);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .map_err(|e| self.unreachable(e))?;
        if status != 200 {
            return Err(Self::refusal(status, &body));
        }
        let info: KeyInfo = serde_json::from_slice(&body).map_err(|_| {
            TokenError::BadAnswer(format!(
                "{url} did not answer with a token authority key description"
            ))
        })?;
        if info.mode != OPRF_MODE || info.suite != OPRF_SUITE {
            return Err(TokenError::BadAnswer(format!(
                "the authority offers {} {}, this partner tool speaks {OPRF_MODE} {OPRF_SUITE}",
                info.mode, info.suite
            )));
        }
        let plain = !info.key_id.is_empty()
            && info.key_id.len() <= 64
            && info.key_id.bytes().all(|b| b.is_ascii_hexdigit());
        if !plain {
            return Err(TokenError::BadAnswer(
                "the authority's key id is malformed".into(),
            ));
        }
        Ok(KeyId::from_public_name(&info.key_id))
    }

    fn evaluate(&self, blinded: &[u8]) -> Result<Evaluation, TokenError> {
        let headers = auth::sign_request(&self.partner, &self.key, blinded)
            .map_err(|e| TokenError::Unreachable(e.to_string()))?;
        let url = format!("{}{}", self.base, auth::EVALUATE_PATH);
        let mut response = self
            .agent
            .post(&url)
            .header(auth::HEADER_PARTNER, &headers.partner)
            .header(auth::HEADER_TIME, &headers.time)
            .header(auth::HEADER_NONCE, &headers.nonce)
            .header(auth::HEADER_SIGNATURE, &headers.signature)
            .content_type("application/octet-stream")
            .send(blinded)
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let key_id = response
            .headers()
            .get(auth::HEADER_KEY_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body_mut()
            .with_config()
            .limit(blinded.len() as u64 + 64 * 1024)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    TokenError::BadAnswer("the answer is larger than the request allows".into())
                }
                e => self.unreachable(e),
            })?;
        if status != 200 {
            return Err(Self::refusal(status, &body));
        }
        let key_id = key_id
            .filter(|k| !k.is_empty() && k.len() <= 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                TokenError::BadAnswer("the answer does not name the evaluating key".into())
            })?;
        if body.len() != blinded.len() || !body.len().is_multiple_of(ELEMENT_LEN) {
            return Err(TokenError::BadAnswer(format!(
                "{} bytes answered for {} bytes asked",
                body.len(),
                blinded.len()
            )));
        }
        Ok(Evaluation {
            key_id: KeyId::from_public_name(&key_id),
            elements: body,
        })
    }
}

/// A partner's blind tokenizer talking to the authority at `url`, signing with the
/// partner's key, and caching tokens (encrypted) in `cache_dir` under the cache key
/// `cache_dir/token-cache.key` (created 0600 when missing).
pub fn blind_tokenizer(
    url: &str,
    partner: &str,
    signing_key: Arc<SigningKey>,
    cache_dir: &Path,
) -> Result<BlindTokenizer, TokenError> {
    let transport = HttpTransport::new(url, partner, signing_key)?;
    BlindTokenizer::connect(
        Arc::new(transport),
        Some(&CacheLocation {
            dir: cache_dir.to_owned(),
            key_file: cache_dir.join(CACHE_KEY_FILE),
        }),
    )
}
