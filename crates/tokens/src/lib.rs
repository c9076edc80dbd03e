//! The token authority of Blindwatch's blind mode, and the partners' HTTP transport to it.
//!
//! The authority holds the VOPRF key (RFC 9497, verifiable mode, ristretto255-SHA512) and
//! evaluates batches of *blinded* elements for registered partners, with one DLEQ proof per
//! batch that the partner checks against the authority's public key, which it pinned. It
//! never sees an identifier — the blinding happens on the partner's machine
//! ([`blindwatch_crypto::blind::BlindTokenizer`]) — and the platform never holds its key.
//! Partners authenticate by signing each request with their Ed25519 key ([`auth`]); each
//! partner has quotas per UTC day and in total and a request rate ([`policy`], from
//! `policies/privacy.toml`); a request over quota is refused whole with HTTP 429; every
//! evaluated batch is written to the authority's audit log (partner, count and the nonce's
//! digest, never the elements) before it is answered, and the log is checkpointed
//! periodically, on demand ([`control`]) and at shutdown.
//!
//! - [`server`]: [`Authority`] and its axum routes; [`serve`] for `blindwatch tokens serve`.
//! - [`client`]: [`HttpTransport`] (a [`blindwatch_crypto::blind::BlindTransport`]) over
//!   HTTPS or loopback HTTP, the partner's pinning of the authority key, and
//!   [`blind_tokenizer`], what a partner seals with.
//! - [`local`]: [`LocalAuthority`], an in-process authority on a loopback port (demo, tests).
//! - [`registry`]: the authority's directory (registered partners, audit log, ledger).
//! - [`ledger`]: usage recovered at start, checked against the audit log.

pub mod auth;
pub mod client;
pub mod control;
pub mod ledger;
pub mod local;
pub mod policy;
pub mod registry;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{CACHE_KEY_FILE, Endpoint, HttpTransport, Pin, blind_tokenizer, fetch_info};
pub use ledger::Used;
pub use local::LocalAuthority;
pub use policy::{Limits, PolicyError, Quotas, RateLimit};
pub use registry::AuthorityDir;
pub use server::{Authority, NOT_AUTHENTICATED, Refusal};

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(
        "partner names are 1-64 lower-case letters, digits, `_` or `-`, with no run of 11 or more digits"
    )]
    BadPartnerName,
    #[error(
        "this public key is already registered for partner `{partner}`: one key per partner (each name gets its own quota); give this partner a key of its own"
    )]
    DuplicateKey { partner: String },
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the partner register {path} is not valid: {why}; fix or remove the entry")]
    Registry { path: PathBuf, why: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Key(#[from] blindwatch_crypto::keys::KeyError),
    #[error("the authority's audit log: {0}")]
    Audit(#[from] blindwatch_audit::AuditError),
    #[error(
        "the audit log {dir} is missing, but this authority has run before (its log key or ledger exists): restore the log from a backup; the authority will not start afresh, which would reset every partner's quota and forget the requests it answered"
    )]
    MissingLog { dir: PathBuf },
    #[error(
        "the audit log {dir} holds {size} entries, but the ledger recorded {expected}: the log was truncated; restore it from a backup (the authority will not start with quotas it cannot account for)"
    )]
    Truncated {
        dir: PathBuf,
        size: u64,
        expected: u64,
    },
    #[error(
        "the audit log {dir} does not have the entries the ledger recorded (its first {size} differ): the log was replaced; restore the original from a backup"
    )]
    Replaced { dir: PathBuf, size: u64 },
    #[error(
        "the ledger {path} is not valid: {why}; restore it from a backup, or move it away to recount usage from the audit log"
    )]
    Ledger { path: PathBuf, why: String },
    #[error("the running authority's control socket {path}: {why}")]
    Control { path: PathBuf, why: String },
    #[error(transparent)]
    Net(#[from] blindwatch_net::NetError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("the token authority's server thread stopped unexpectedly")]
    Crashed,
}

/// How [`serve`] runs the authority.
#[derive(Clone)]
pub struct ServeSettings {
    /// TLS, deadlines and the connection cap.
    pub net: blindwatch_net::ServeOptions,
    /// How often the audit log is checkpointed (and the ledger written) while serving.
    pub checkpoint_every: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            net: blindwatch_net::ServeOptions::default(),
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

/// Serves `authority` on `listener` until `shutdown` resolves: the HTTP routes, a signed
/// checkpoint every `checkpoint_every`, the control socket for `audit checkpoint`; at the
/// end a last checkpoint.
pub async fn serve(
    listener: tokio::net::TcpListener,
    authority: Arc<Authority>,
    settings: ServeSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AuthorityError> {
    let control = control::listen(authority.clone())?;
    let periodic = {
        let authority = authority.clone();
        let every = settings.checkpoint_every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let authority = authority.clone();
                match tokio::task::spawn_blocking(move || authority.checkpoint()).await {
                    Ok(Ok(_)) => tracing::debug!("audit checkpoint signed"),
                    Ok(Err(e)) => tracing::error!(error = %e, "periodic audit checkpoint failed"),
                    Err(_) => tracing::error!("periodic audit checkpoint task failed"),
                }
            }
        })
    };
    let served =
        blindwatch_net::serve(listener, authority.clone().router(), settings.net, shutdown).await;
    periodic.abort();
    control.abort();
    let _ = std::fs::remove_file(authority.dir().control_socket());
    let last = {
        let authority = authority.clone();
        tokio::task::spawn_blocking(move || authority.checkpoint())
            .await
            .map_err(|_| AuthorityError::Crashed)
    };
    served?;
    last??;
    Ok(())
}
