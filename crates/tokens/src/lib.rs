//! The token authority of Blindwatch's blind mode, and the partners' HTTP transport to it.
//!
//! The authority holds the OPRF key (RFC 9497, OPRF mode, ristretto255-SHA512) and evaluates
//! batches of *blinded* elements for registered partners. It never sees an identifier — the
//! blinding happens on the partner's machine ([`blindwatch_crypto::blind::BlindTokenizer`])
//! — and the platform never holds its key. Partners authenticate by signing each request
//! with their Ed25519 key ([`auth`]); each partner has quotas per UTC day and in total
//! ([`policy`], from `policies/privacy.toml`); a request over quota is refused whole with
//! HTTP 429; every evaluated batch is written to the authority's audit log (partner and
//! count, never the elements).
//!
//! - [`server`]: [`Authority`] and its axum routes; [`serve`] for `blindwatch tokens serve`.
//! - [`client`]: [`HttpTransport`] (a [`blindwatch_crypto::blind::BlindTransport`]) and
//!   [`blind_tokenizer`], what a partner seals with.
//! - [`local`]: [`LocalAuthority`], an in-process authority on a loopback port (demo, tests).
//! - [`registry`]: the authority's directory (registered partners, audit log).

pub mod auth;
pub mod client;
pub mod local;
pub mod policy;
pub mod registry;
pub mod server;

use std::path::PathBuf;

pub use client::{CACHE_KEY_FILE, HttpTransport, blind_tokenizer};
pub use local::LocalAuthority;
pub use policy::{Limits, PolicyError, Quotas};
pub use registry::AuthorityDir;
pub use server::{Authority, Refusal, serve};

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error(
        "partner names are 1-64 lower-case letters, digits, `_` or `-`, with no run of 11 or more digits"
    )]
    BadPartnerName,
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the partner register {path} is not valid: {why}; fix or remove the entry")]
    Registry { path: PathBuf, why: String },
    #[error(transparent)]
    Key(#[from] blindwatch_crypto::keys::KeyError),
    #[error("the authority's audit log: {0}")]
    Audit(#[from] blindwatch_audit::AuditError),
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    #[error("the token authority's server thread stopped unexpectedly")]
    Crashed,
}
