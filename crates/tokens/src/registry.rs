//! The token authority's own directory and its register of partners.
//!
//! ```text
//! DIR/partners.toml   partners that may ask for evaluations: name → Ed25519 public key
//!                     (one key per partner: a key under two names would get two quotas)
//! DIR/keys/log.key    the authority's audit-log signing key (0600)
//! DIR/keys/log.vkey   its verifier key (signed-note format), for auditors and partners
//! DIR/audit/          the authority's audit log (one entry per evaluated batch)
//! DIR/ledger.json     usage per partner as of a signed size of the log (see `ledger`)
//! DIR/control.sock    while serving: `blindwatch audit checkpoint --data-dir DIR` asks here
//! ```
//! The log is laid out as in a platform data directory, so auditors check it with the
//! same command: `blindwatch audit verify --data-dir DIR`.
//! The OPRF key itself is a separate file (`--key`), so it can live on other storage.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_audit::{AuditLog, LogPublicKey, LogSigner, PartnerId};
use blindwatch_common::fsutil;
use blindwatch_crypto::keys::KeyFileKind;
use blindwatch_crypto::sign::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::AuthorityError;

/// The origin line of the authority's audit checkpoints.
pub const AUTHORITY_AUDIT_ORIGIN: &str = "blindwatch.local/token-authority";

#[derive(Debug, Clone)]
pub struct AuthorityDir {
    root: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PartnersFile {
    #[serde(default)]
    partners: BTreeMap<String, PartnerEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerEntry {
    /// Base64 of the Ed25519 public key.
    key: String,
}

/// Checks a partner name: a valid audit id (no digit runs that could be an identifier).
pub fn check_partner_name(name: &str) -> Result<(), AuthorityError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !plain || PartnerId::new(name).is_err() {
        return Err(AuthorityError::BadPartnerName);
    }
    Ok(())
}

impl AuthorityDir {
    pub fn new(root: impl Into<PathBuf>) -> AuthorityDir {
        AuthorityDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn partners_file(&self) -> PathBuf {
        self.root.join("partners.toml")
    }
    pub fn log_key(&self) -> PathBuf {
        self.root.join("keys").join("log.key")
    }
    pub fn log_public_key(&self) -> PathBuf {
        self.root.join("keys").join("log.vkey")
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }
    pub fn ledger_file(&self) -> PathBuf {
        self.root.join("ledger.json")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.root.join("control.sock")
    }

    /// Whether `dir` holds a token authority's audit log (its verifier key names the
    /// authority's origin), as opposed to a platform data directory.
    pub fn is_authority_dir(dir: &Path) -> bool {
        std::fs::read_to_string(AuthorityDir::new(dir).log_public_key())
            .ok()
            .and_then(|text| LogPublicKey::from_vkey(text.trim()).ok())
            .is_some_and(|key| key.name() == AUTHORITY_AUDIT_ORIGIN)
    }

    /// The registered partners and their keys.
    pub fn partners(&self) -> Result<BTreeMap<String, VerifyingKey>, AuthorityError> {
        let path = self.partners_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => return Err(AuthorityError::Io { path, source }),
        };
        let file: PartnersFile = toml::from_str(&text).map_err(|e| AuthorityError::Registry {
            path: path.clone(),
            why: e.message().to_owned(),
        })?;
        let mut out: BTreeMap<String, VerifyingKey> = BTreeMap::new();
        for (name, entry) in file.partners {
            check_partner_name(&name)?;
            let key = B64
                .decode(entry.key.trim())
                .ok()
                .and_then(|b| VerifyingKey::from_bytes(&b))
                .ok_or_else(|| AuthorityError::Registry {
                    path: path.clone(),
                    why: format!("the key of partner `{name}` is not an Ed25519 public key"),
                })?;
            if let Some(other) = holder_of(&out, &key) {
                return Err(AuthorityError::Registry {
                    path: path.clone(),
                    why: format!(
                        "partners `{other}` and `{name}` have the same public key (one key, one partner: each name gets its own quota); remove one"
                    ),
                });
            }
            out.insert(name, key);
        }
        Ok(out)
    }

    /// Registers (or re-keys) a partner; the file is replaced atomically. A key that is
    /// already another partner's is refused.
    pub fn add_partner(&self, name: &str, key: &VerifyingKey) -> Result<(), AuthorityError> {
        check_partner_name(name)?;
        let mut partners = self.partners()?;
        check_key_unused(&partners, name, key)?;
        partners.insert(name.to_owned(), key.clone());
        let file = PartnersFile {
            partners: partners
                .into_iter()
                .map(|(n, k)| {
                    (
                        n,
                        PartnerEntry {
                            key: B64.encode(k.as_bytes()),
                        },
                    )
                })
                .collect(),
        };
        let path = self.partners_file();
        let text = toml::to_string(&file).map_err(|e| AuthorityError::Registry {
            path: path.clone(),
            why: e.to_string(),
        })?;
        let header = "# Partners that may ask the token authority for evaluations (Ed25519 public keys).\n# Managed by `blindwatch tokens add-partner`.\n";
        fsutil::replace(&path, format!("{header}{text}").as_bytes())
            .map_err(|source| AuthorityError::Io { path, source })
    }

    /// Opens the authority's audit log, creating it and its signing key on first use. An
    /// authority that has run before (it has a log key or a ledger) and whose log is gone is
    /// refused: starting afresh would reset every partner's quota and forget the nonces.
    pub fn open_audit_log(&self) -> Result<AuditLog, AuthorityError> {
        let key_path = self.log_key();
        let has_run = key_path.exists() || self.ledger_file().exists();
        if has_run && !self.audit_dir().join("log.json").is_file() {
            return Err(AuthorityError::MissingLog {
                dir: self.audit_dir(),
            });
        }
        if !key_path.exists() {
            let key = SigningKey::generate()?;
            key.write(&key_path, KeyFileKind::LogSigning)?;
        }
        let key = SigningKey::read(&key_path, KeyFileKind::LogSigning)?;
        let signer = LogSigner::from_pkcs8(AUTHORITY_AUDIT_ORIGIN, key.pkcs8())?;
        let log = AuditLog::open(self.audit_dir(), signer)?;
        let vkey = self.log_public_key();
        if !vkey.exists() {
            fsutil::write_new(
                &vkey,
                format!("{}\n", log.public_key().to_vkey()).as_bytes(),
            )
            .map_err(|source| AuthorityError::Io { path: vkey, source })?;
        }
        Ok(log)
    }
}

/// The partner that already holds `key`, if any.
fn holder_of<'a>(
    partners: &'a BTreeMap<String, VerifyingKey>,
    key: &VerifyingKey,
) -> Option<&'a str> {
    partners
        .iter()
        .find(|(_, k)| k.as_bytes() == key.as_bytes())
        .map(|(n, _)| n.as_str())
}

/// Refuses `key` for `name` when another partner holds it.
pub(crate) fn check_key_unused(
    partners: &BTreeMap<String, VerifyingKey>,
    name: &str,
    key: &VerifyingKey,
) -> Result<(), AuthorityError> {
    match holder_of(partners, key) {
        Some(other) if other != name => Err(AuthorityError::DuplicateKey {
            partner: other.to_owned(),
        }),
        _ => Ok(()),
    }
}
