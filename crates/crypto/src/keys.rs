//! Key files: one labelled line, then base64. Secret key files are written 0600 through a
//! temporary file and refused when group or others can read them.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// A short public name for a key: the first 8 bytes of SHA-256 over a label and the public
/// material. Safe to print; it reveals nothing of a secret key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct KeyId(String);

impl KeyId {
    pub fn derive(label: &str, public: &[u8]) -> KeyId {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(public);
        KeyId(hex::encode(&ctx.finish().as_ref()[..8]))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A key id as another party published it (e.g. a token authority's answer).
    pub fn from_public_name(name: &str) -> KeyId {
        KeyId(name.to_owned())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing to overwrite existing key file {path}: move it away first")]
    Exists { path: PathBuf },
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`, and rotate the key if others may have read it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a {expected} file: check that the right file was given")]
    Label {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("key file {path} is damaged: {why}")]
    Malformed { path: PathBuf, why: &'static str },
    #[error("the operating system's random generator failed")]
    Random,
}

/// The kinds of key file, with the label on their first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileKind {
    PartnerSigning,
    PartnerPublic,
    PlatformPrivate,
    PlatformPublic,
    Linkage,
    Deployment,
    LogSigning,
    LogPublic,
    /// The token authority's OPRF private key (a ristretto255 scalar).
    TokenAuthority,
    /// A partner's key for its local encrypted token cache.
    TokenCache,
    /// The token authority's VOPRF public key (a ristretto255 element): what partners pin
    /// and the platform accepts blind packages under.
    TokenAuthorityPublic,
}

impl KeyFileKind {
    pub fn label(self) -> &'static str {
        match self {
            KeyFileKind::PartnerSigning => "blindwatch partner signing key v1 (Ed25519 PKCS#8)",
            KeyFileKind::PartnerPublic => "blindwatch partner public key v1 (Ed25519)",
            KeyFileKind::PlatformPrivate => "blindwatch platform private key v1 (X25519 HPKE)",
            KeyFileKind::PlatformPublic => "blindwatch platform public key v1 (X25519 HPKE)",
            KeyFileKind::Linkage => "blindwatch consortium linkage key v1",
            KeyFileKind::Deployment => "blindwatch deployment secret v1",
            KeyFileKind::LogSigning => "blindwatch audit log signing key v1 (Ed25519 PKCS#8)",
            KeyFileKind::LogPublic => "blindwatch audit log public key v1 (Ed25519)",
            KeyFileKind::TokenAuthority => {
                "blindwatch token authority key v1 (OPRF ristretto255-SHA512)"
            }
            KeyFileKind::TokenCache => "blindwatch partner token cache key v1 (AES-256-GCM)",
            KeyFileKind::TokenAuthorityPublic => {
                "blindwatch token authority public key v1 (VOPRF ristretto255-SHA512)"
            }
        }
    }

    pub fn is_secret(self) -> bool {
        !matches!(
            self,
            KeyFileKind::PartnerPublic
                | KeyFileKind::PlatformPublic
                | KeyFileKind::LogPublic
                | KeyFileKind::TokenAuthorityPublic
        )
    }
}

/// Writes a key file atomically (temporary file, fsync, rename), 0600 for secrets. Refuses
/// to replace an existing file: losing a key loses data.
pub fn write_key_file(path: &Path, kind: KeyFileKind, material: &[u8]) -> Result<(), KeyError> {
    if path.exists() {
        return Err(KeyError::Exists {
            path: path.to_owned(),
        });
    }
    let werr = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".key-")
        .permissions(std::fs::Permissions::from_mode(if kind.is_secret() {
            0o600
        } else {
            0o644
        }))
        .tempfile_in(dir)
        .map_err(werr)?;
    let text = Zeroizing::new(format!("{}\n{}\n", kind.label(), B64.encode(material)));
    tmp.write_all(text.as_bytes()).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    tmp.persist_noclobber(path).map_err(|e| werr(e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        d.sync_all().map_err(werr)?;
    }
    Ok(())
}

use std::os::unix::fs::PermissionsExt;

/// Reads a key file of the given kind, refusing secrets that others can read.
pub fn read_key_file(path: &Path, kind: KeyFileKind) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let rerr = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(rerr)?;
    let mode = meta.permissions().mode() & 0o777;
    if kind.is_secret() && mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(rerr)?);
    let mut lines = text.lines();
    if lines.next() != Some(kind.label()) {
        return Err(KeyError::Label {
            path: path.to_owned(),
            expected: kind.label(),
        });
    }
    let body = lines.next().ok_or(KeyError::Malformed {
        path: path.to_owned(),
        why: "no key line",
    })?;
    B64.decode(body.trim())
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
            why: "the key line is not base64",
        })
}

/// Reads a fixed-size key file.
pub fn read_fixed<const N: usize>(
    path: &Path,
    kind: KeyFileKind,
) -> Result<Zeroizing<[u8; N]>, KeyError> {
    let bytes = read_key_file(path, kind)?;
    let mut out = Zeroizing::new([0u8; N]);
    if bytes.len() != N {
        return Err(KeyError::Malformed {
            path: path.to_owned(),
            why: "the key has the wrong length",
        });
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_private_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_key_file(&path, KeyFileKind::Linkage, &[7u8; 32]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            *read_fixed::<32>(&path, KeyFileKind::Linkage).unwrap(),
            [7u8; 32]
        );
        assert!(matches!(
            write_key_file(&path, KeyFileKind::Linkage, &[1u8; 32]),
            Err(KeyError::Exists { .. })
        ));
        assert!(matches!(
            read_key_file(&path, KeyFileKind::Deployment),
            Err(KeyError::Label { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key_file(&path, KeyFileKind::Linkage).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
    }
}
