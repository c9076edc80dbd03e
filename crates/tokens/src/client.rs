//! The partner's HTTP transport to the token authority (ureq, blocking; safe to use from
//! inside or outside an async runtime). It sends only blinded elements, signs every request
//! with the partner's Ed25519 key for the key the partner pinned, and speaks HTTPS (rustls,
//! ring) to an authority whose certificate chains to a CA file the partner names — or is
//! that very (self-signed) certificate. Plain HTTP only to a loopback address, unless
//! explicitly allowed.
//!
//! The authority's *key* is pinned separately from TLS ([`Pin`]): every batch's proof is
//! checked against it, so even a TLS terminator or a compromised CA cannot swap the key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{
    AuthorityInfo, AuthorityPublicKey, BlindTokenizer, BlindTransport, CacheLocation, ELEMENT_LEN,
    MAX_BATCH, OPRF_MODE, OPRF_SUITE, PROOF_LEN,
};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::TokenError;
use blindwatch_net::problem::Problem;
use serde::Deserialize;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use crate::auth;

/// The cache key file a partner keeps beside its token cache.
pub const CACHE_KEY_FILE: &str = "token-cache.key";

/// Rate-limit refusals a request waits out before giving up.
const RATE_RETRIES: usize = 5;
/// The longest `Retry-After` a request waits for.
const MAX_RETRY_WAIT_SECS: u64 = 10;

/// Where the authority is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// `https://host:port` (or `http://127.0.0.1:port` on the same machine).
    pub url: String,
    /// PEM certificates the authority's TLS certificate must chain to — its CA, or the
    /// authority's own self-signed certificate. Required for `https://`.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and private key, when the authority requires client
    /// certificates.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Allow `http://` to an address that is not loopback (only inside a trusted network).
    pub allow_plain_http: bool,
}

impl Endpoint {
    /// A plain endpoint (no TLS settings).
    pub fn new(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_owned(),
            ..Endpoint::default()
        }
    }
}

/// Which authority key the partner trusts.
#[derive(Debug, Clone)]
pub enum Pin {
    /// A public key file the partner got from the authority's operator out of band
    /// (`--authority-key FILE`).
    File(PathBuf),
    /// Trust on first use: the key the authority serves the first time is recorded in this
    /// file, and from then on only that key is accepted (the file is never changed by a
    /// seal; pin a new key with `--authority-key` after an announced rotation).
    FirstUse(PathBuf),
}

#[derive(Deserialize)]
struct KeyInfo {
    key_id: String,
    public_key: String,
    mode: String,
    suite: String,
    max_batch: usize,
}

fn unreachable(base: &str, e: ureq::Error) -> TokenError {
    TokenError::Unreachable(format!(
        "{base} ({e}): check that `blindwatch tokens serve` runs there, the address is right and, for https://, that --authority-ca names its certificate or CA"
    ))
}

fn host_is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> TokenError {
    TokenError::Unreachable(format!("{what}: {e}"))
}

/// A ureq agent for `endpoint`, and its base URL.
fn agent(endpoint: &Endpoint) -> Result<(ureq::Agent, String), TokenError> {
    let base = endpoint.url.trim_end_matches('/').to_owned();
    let uri: ureq::http::Uri = base.parse().map_err(|_| {
        TokenError::Unreachable(format!(
            "`{base}` is not a URL: give the authority as https://HOST:PORT"
        ))
    })?;
    let host = uri.host().ok_or_else(|| {
        TokenError::Unreachable(format!(
            "`{base}` names no host: give the authority as https://HOST:PORT"
        ))
    })?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(120)))
        .max_idle_connections_per_host(32);
    let config = match uri.scheme_str() {
        Some("https") => {
            let ca = endpoint.ca.as_deref().ok_or_else(|| {
                TokenError::Unreachable(format!(
                    "{base} is https://, but no certificate to trust was given: add --authority-ca FILE (the CA of the authority's certificate, or the certificate itself)"
                ))
            })?;
            let roots: Vec<Certificate<'static>> =
                blindwatch_net::read_certificates(ca, "authority CA certificate")
                    .map_err(|e| tls_error("--authority-ca", e))?
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect();
            let mut tls = TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(blindwatch_net::crypto_provider())
                .root_certs(RootCerts::Specific(Arc::new(roots)));
            if let Some((cert, key)) = &endpoint.client_cert {
                let chain: Vec<Certificate<'static>> =
                    blindwatch_net::read_certificates(cert, "client certificate")
                        .map_err(|e| tls_error("--authority-client-cert", e))?
                        .iter()
                        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                        .collect();
                let pem = zeroize::Zeroizing::new(std::fs::read(key).map_err(|e| {
                    tls_error(&format!("--authority-client-key {}", key.display()), e)
                })?);
                let key = PrivateKey::from_pem(&pem).map_err(|e| {
                    tls_error(&format!("--authority-client-key {}", key.display()), e)
                })?;
                tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
            }
            config.tls_config(tls.build())
        }
        Some("http") => {
            if !host_is_loopback(host) && !endpoint.allow_plain_http {
                return Err(TokenError::Unreachable(format!(
                    "{base} is plain http:// to another machine: use https:// with --authority-ca FILE (or, inside a trusted network only, --allow-plain-http)"
                )));
            }
            if endpoint.ca.is_some() || endpoint.client_cert.is_some() {
                return Err(TokenError::Unreachable(format!(
                    "TLS settings were given, but {base} is plain http://: use https://"
                )));
            }
            config
        }
        _ => {
            return Err(TokenError::Unreachable(format!(
                "the authority URL must start with https:// (or http:// on this machine), got `{base}`"
            )));
        }
    };
    Ok((config.build().into(), base))
}

fn refusal(status: u16, body: &[u8]) -> TokenError {
    let problem = serde_json::from_slice::<Problem>(body).ok();
    let why = problem
        .as_ref()
        .map(|p| p.detail.clone())
        .unwrap_or_else(|| "no reason given".to_owned());
    match status {
        429 => TokenError::Refused(format!("HTTP 429: {why}")),
        401 | 403 => TokenError::Refused(format!("not authenticated (HTTP {status}): {why}")),
        400..=499 => TokenError::Refused(format!("HTTP {status}: {why}")),
        _ => TokenError::Unreachable(format!("the authority failed (HTTP {status}): {why}")),
    }
}

fn get_info(agent: &ureq::Agent, base: &str) -> Result<AuthorityInfo, TokenError> {
    let url = format!("{base}{}", auth::KEY_PATH);
    let mut response = agent.get(&url).call().map_err(|e| unreachable(base, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec()
        .map_err(|e| unreachable(base, e))?;
    if status != 200 {
        return Err(refusal(status, &body));
    }
    let info: KeyInfo = serde_json::from_slice(&body).map_err(|_| {
        TokenError::BadAnswer(format!(
            "{url} did not answer with a token authority key description (an authority of an older version?)"
        ))
    })?;
    if info.mode != OPRF_MODE || info.suite != OPRF_SUITE {
        return Err(TokenError::BadAnswer(format!(
            "the authority offers {} {}, this partner tool speaks {OPRF_MODE} {OPRF_SUITE}",
            info.mode, info.suite
        )));
    }
    let public_key = B64
        .decode(info.public_key.trim())
        .ok()
        .and_then(|b| AuthorityPublicKey::from_bytes(&b).ok())
        .ok_or_else(|| TokenError::BadAnswer("the authority's public key is malformed".into()))?;
    if public_key.key_id().as_str() != info.key_id {
        return Err(TokenError::BadAnswer(
            "the authority's key id is not its public key's".into(),
        ));
    }
    if info.max_batch == 0 {
        return Err(TokenError::BadAnswer(
            "the authority allows no elements per request".into(),
        ));
    }
    Ok(AuthorityInfo {
        public_key,
        max_batch: info.max_batch.min(MAX_BATCH),
    })
}

/// Asks the authority at `endpoint` for its key and batch limit (no authentication).
pub fn fetch_info(endpoint: &Endpoint) -> Result<AuthorityInfo, TokenError> {
    let (agent, base) = agent(endpoint)?;
    get_info(&agent, &base)
}

pub struct HttpTransport {
    agent: ureq::Agent,
    base: String,
    partner: String,
    key: Arc<SigningKey>,
    /// The key id requests are signed for: the pinned key's.
    key_id: KeyId,
}

impl HttpTransport {
    /// A transport to the authority at `endpoint`, signing as `partner` for the authority
    /// key `pinned`.
    pub fn new(
        endpoint: &Endpoint,
        partner: &str,
        key: Arc<SigningKey>,
        pinned: &AuthorityPublicKey,
    ) -> Result<HttpTransport, TokenError> {
        let (agent, base) = agent(endpoint)?;
        Ok(HttpTransport {
            agent,
            base,
            partner: partner.to_owned(),
            key,
            key_id: pinned.key_id().clone(),
        })
    }

    fn post(&self, blinded: &[u8]) -> Result<(u16, Option<u64>, Vec<u8>), TokenError> {
        let headers = auth::sign_request(&self.key_id, &self.partner, &self.key, blinded)
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
            .map_err(|e| unreachable(&self.base, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = response
            .body_mut()
            .with_config()
            .limit((PROOF_LEN + blinded.len()) as u64 + 64 * 1024)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    TokenError::BadAnswer("the answer is larger than the request allows".into())
                }
                e => unreachable(&self.base, e),
            })?;
        Ok((status, retry_after, body))
    }
}

impl BlindTransport for HttpTransport {
    fn info(&self) -> Result<AuthorityInfo, TokenError> {
        get_info(&self.agent, &self.base)
    }

    fn evaluate(&self, blinded: &[u8]) -> Result<Vec<u8>, TokenError> {
        let mut attempt = 0;
        loop {
            let (status, retry_after, body) = self.post(blinded)?;
            if status == 200 {
                if body.len() != PROOF_LEN + blinded.len()
                    || !blinded.len().is_multiple_of(ELEMENT_LEN)
                {
                    return Err(TokenError::BadAnswer(format!(
                        "{} bytes answered for {} bytes asked",
                        body.len(),
                        blinded.len()
                    )));
                }
                return Ok(body);
            }
            // A rate-limit refusal is waited out (a new request, with a new nonce); a quota
            // refusal is final.
            let rate_limited = status == 429
                && serde_json::from_slice::<Problem>(&body)
                    .is_ok_and(|p| p.code() == "rate-limited");
            match retry_after {
                Some(wait)
                    if rate_limited && attempt < RATE_RETRIES && wait <= MAX_RETRY_WAIT_SECS =>
                {
                    attempt += 1;
                    std::thread::sleep(Duration::from_secs(wait.max(1)));
                }
                _ => return Err(refusal(status, &body)),
            }
        }
    }
}

/// The authority key a seal uses: the pinned one (recording the served key first when the
/// pin is trust-on-first-use and nothing is recorded yet). Returns the key and whether it
/// was recorded just now.
pub fn resolve_pin(
    pin: &Pin,
    served: &AuthorityPublicKey,
) -> Result<(AuthorityPublicKey, bool), TokenError> {
    let read = |path: &Path| {
        AuthorityPublicKey::read(path).map_err(|e| {
            TokenError::BadAnswer(format!(
                "the pinned authority key cannot be read ({e}); nothing was sent"
            ))
        })
    };
    match pin {
        Pin::File(path) => Ok((read(path)?, false)),
        Pin::FirstUse(path) if path.exists() => Ok((read(path)?, false)),
        Pin::FirstUse(path) => {
            served.write(path).map_err(|e| {
                TokenError::Cache(format!("cannot record the authority's key: {e}"))
            })?;
            Ok((served.clone(), true))
        }
    }
}

/// A connected blind tokenizer and what the connection established.
pub struct Connected {
    pub tokenizer: BlindTokenizer,
    /// The authority key every batch is verified against.
    pub pinned: AuthorityPublicKey,
    /// Whether the key was recorded by this connection (trust on first use).
    pub recorded: bool,
}

/// A partner's blind tokenizer talking to the authority at `endpoint`, trusting only the
/// key `pin` names, signing with the partner's key, and caching tokens (encrypted) in
/// `cache_dir` under the cache key `cache_dir/token-cache.key` (created 0600 when missing).
/// A served key that is not the pinned one fails here, before anything is sent.
pub fn blind_tokenizer(
    endpoint: &Endpoint,
    partner: &str,
    signing_key: Arc<SigningKey>,
    cache_dir: &Path,
    pin: &Pin,
) -> Result<Connected, TokenError> {
    let info = fetch_info(endpoint)?;
    let (pinned, recorded) = resolve_pin(pin, &info.public_key)?;
    let transport = HttpTransport::new(endpoint, partner, signing_key, &pinned)?;
    let tokenizer = BlindTokenizer::connect(
        Arc::new(transport),
        &pinned,
        Some(&CacheLocation {
            dir: cache_dir.to_owned(),
            key_file: cache_dir.join(CACHE_KEY_FILE),
        }),
    )?;
    Ok(Connected {
        tokenizer,
        pinned,
        recorded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for ok in [
            "http://127.0.0.1:7300",
            "http://localhost:1",
            "http://[::1]:7300/",
        ] {
            assert!(agent(&Endpoint::new(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.5:7300",
            "http://authority.example:7300",
            "ftp://x",
        ] {
            let err = agent(&Endpoint::new(refused)).err().unwrap().to_string();
            assert!(err.contains("https://"), "{refused}: {err}");
        }
        let allowed = Endpoint {
            allow_plain_http: true,
            ..Endpoint::new("http://10.0.0.5:7300")
        };
        assert!(agent(&allowed).is_ok());
        let err = agent(&Endpoint::new("https://authority.example"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--authority-ca"), "{err}");
    }
}
