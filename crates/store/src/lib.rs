//! The platform's data directory and catalog.
//!
//! Layout of a platform data directory:
//! ```text
//! keys/platform.key      HPKE private key (0600)      keys/platform.pub  what partners seal to
//! keys/deployment.key    pseudonym secret (0600)      keys/log.key       audit-log signing key (0600)
//! keys/log.vkey          audit-log verifier key (signed-note format), for auditors
//! policies/              contracts (datasets/), Cedar policies, privacy settings
//! catalog.sqlite         partners, their datasets, accepted contributions, partners' model approvals
//! models/<id>.toml       registered warning models (checked against the contracts, approved by partners)
//! alerts.sqlite          alerts (pseudonymous subjects only), their history, model runs
//! users.sqlite           the server's API users (hashed bearer tokens)
//! packages/<partner>/<dataset>/<partner>.<dataset>.<seq:019>.<sha256>.{parquet,manifest.json}
//! audit/                 the tamper-evident audit log
//! tmp/                   staging for files being received (same filesystem, then renamed)
//! ```
//! Packages are stored byte for byte as received, under names the platform gives them (table,
//! sequence, the file's SHA-256), never names a package carries; a stored file is never
//! replaced or removed. The catalog, not the directory listing, says what is current: a file
//! without its catalog row (a crash between the two) is ignored.
//!
//! With `--database-url postgres://...` the alert store and the users live in PostgreSQL
//! instead (schemas `alerts` and `users`); see [`database`].

mod approvals;
mod budget;
mod catalog;
pub mod database;

use blindwatch_audit::{AuditLog, LogSigner};
use blindwatch_crypto::keys::KeyFileKind;
use blindwatch_crypto::sign::SigningKey;

pub use approvals::StoredApproval;
pub use budget::{Budget, Charge, Spent};
pub use catalog::{
    Catalog, CatalogError, Contribution, NewContribution, PartnerRecord, TokenGeneration,
    TokenMismatch,
};
pub use database::{Database, DatabaseError, DatabaseTarget, PostgresUrl};

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    pub fn platform_private_key(&self) -> PathBuf {
        self.keys_dir().join("platform.key")
    }
    pub fn platform_public_key(&self) -> PathBuf {
        self.keys_dir().join("platform.pub")
    }
    pub fn deployment_key(&self) -> PathBuf {
        self.keys_dir().join("deployment.key")
    }
    pub fn log_key(&self) -> PathBuf {
        self.keys_dir().join("log.key")
    }
    pub fn log_public_key(&self) -> PathBuf {
        self.keys_dir().join("log.vkey")
    }
    pub fn policies_dir(&self) -> PathBuf {
        self.root.join("policies")
    }
    pub fn contracts_dir(&self) -> PathBuf {
        self.policies_dir().join("datasets")
    }
    pub fn catalog_path(&self) -> PathBuf {
        self.root.join("catalog.sqlite")
    }
    /// The alert store: alerts, their history, model runs.
    pub fn alerts_path(&self) -> PathBuf {
        self.root.join("alerts.sqlite")
    }
    /// The server's API users (hashed bearer tokens).
    pub fn users_path(&self) -> PathBuf {
        self.root.join("users.sqlite")
    }
    /// Where the alert store lives: `alerts.sqlite` here, or PostgreSQL schema `alerts`.
    pub fn alerts_database(&self, postgres: Option<&PostgresUrl>) -> DatabaseTarget {
        DatabaseTarget::new(&self.alerts_path(), postgres, "alerts")
    }
    /// Where the server's users live: `users.sqlite` here, or PostgreSQL schema `users`.
    pub fn users_database(&self, postgres: Option<&PostgresUrl>) -> DatabaseTarget {
        DatabaseTarget::new(&self.users_path(), postgres, "users")
    }
    /// Registered warning models (`<id>.toml`).
    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }
    pub fn packages_dir(&self) -> PathBuf {
        self.root.join("packages")
    }
    pub fn package_dir(&self, partner: &str, dataset: &str) -> PathBuf {
        self.packages_dir().join(partner).join(dataset)
    }
    /// Where an accepted contribution's Parquet file and manifest are stored: named by the
    /// platform from the table, the sequence and the file's SHA-256 (64 hex digits), so no
    /// two contributions share a name and nothing a partner writes chooses one.
    pub fn package_paths(
        &self,
        partner: &str,
        dataset: &str,
        sequence: u64,
        file_sha256: &str,
    ) -> (PathBuf, PathBuf) {
        let dir = self.package_dir(partner, dataset);
        let stem = format!("{partner}.{dataset}.{sequence:019}.{file_sha256}");
        (
            dir.join(format!("{stem}.parquet")),
            dir.join(format!("{stem}.manifest.json")),
        )
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    /// True once `keys init` has run here.
    pub fn is_initialised(&self) -> bool {
        self.platform_private_key().is_file() && self.catalog_path().is_file()
    }
}

/// The origin line of this deployment's audit checkpoints.
pub const AUDIT_ORIGIN: &str = "blindwatch.local/audit";

#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    #[error(transparent)]
    Key(#[from] blindwatch_crypto::keys::KeyError),
    #[error(transparent)]
    Audit(#[from] blindwatch_audit::AuditError),
}

impl DataDir {
    /// Opens the platform's audit log with the platform's log key.
    pub fn open_audit_log(&self) -> Result<AuditLog, AuditOpenError> {
        let key = SigningKey::read(&self.log_key(), KeyFileKind::LogSigning)?;
        let signer = LogSigner::from_pkcs8(AUDIT_ORIGIN, key.pkcs8())?;
        Ok(AuditLog::open(self.audit_dir(), signer)?)
    }
}
