//! HPKE (RFC 9180, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode) wrapping
//! of data keys to the platform's public key. A wrapped key is bound (as HPKE associated
//! data) to the name of the column it encrypts, so it cannot be moved to another column.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError, KeyFileKind, KeyId};

type Kem = X25519HkdfSha256;
const INFO: &[u8] = b"blindwatch column key v1";

/// The platform's HPKE public key: partners wrap data keys to it.
#[derive(Clone)]
pub struct PlatformPublicKey {
    key: <Kem as hpke::Kem>::PublicKey,
    id: KeyId,
}

/// The platform's HPKE private key. Held only by the platform's evaluation engine and ingest.
pub struct PlatformPrivateKey {
    key: <Kem as hpke::Kem>::PrivateKey,
    id: KeyId,
}

fn key_id_of(public: &<Kem as hpke::Kem>::PublicKey) -> KeyId {
    KeyId::derive("platform-hpke", &public.to_bytes())
}

impl PlatformPublicKey {
    pub fn id(&self) -> &KeyId {
        &self.id
    }
    pub fn read(path: &std::path::Path) -> Result<PlatformPublicKey, KeyError> {
        let bytes = keys::read_key_file(path, KeyFileKind::PlatformPublic)?;
        let key =
            <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed {
                path: path.to_owned(),
                why: "not an X25519 public key",
            })?;
        Ok(PlatformPublicKey {
            id: key_id_of(&key),
            key,
        })
    }
    pub fn write(&self, path: &std::path::Path) -> Result<(), KeyError> {
        keys::write_key_file(path, KeyFileKind::PlatformPublic, &self.key.to_bytes())
    }
}

impl PlatformPrivateKey {
    pub fn generate() -> (PlatformPrivateKey, PlatformPublicKey) {
        let (sk, pk) = Kem::gen_keypair(&mut rand_core::UnwrapErr(rand_core::OsRng));
        let id = key_id_of(&pk);
        (
            PlatformPrivateKey {
                key: sk,
                id: id.clone(),
            },
            PlatformPublicKey { key: pk, id },
        )
    }
    pub fn id(&self) -> &KeyId {
        &self.id
    }
    pub fn read(path: &std::path::Path) -> Result<PlatformPrivateKey, KeyError> {
        let bytes = keys::read_key_file(path, KeyFileKind::PlatformPrivate)?;
        let key = <Kem as hpke::Kem>::PrivateKey::from_bytes(&bytes).map_err(|_| {
            KeyError::Malformed {
                path: path.to_owned(),
                why: "not an X25519 private key",
            }
        })?;
        let id = key_id_of(&Kem::sk_to_pk(&key));
        Ok(PlatformPrivateKey { key, id })
    }
    pub fn write(&self, path: &std::path::Path) -> Result<(), KeyError> {
        let bytes = Zeroizing::new(self.key.to_bytes().to_vec());
        keys::write_key_file(path, KeyFileKind::PlatformPrivate, &bytes)
    }
}

/// A data key wrapped to the platform key, as stored in Parquet key metadata (compact JSON).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// Format version.
    pub v: u8,
    /// The platform key it is wrapped to.
    pub kid: KeyId,
    /// The column the key encrypts (`""` for the footer).
    pub col: String,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// HPKE ciphertext of the data key, base64.
    pub ct: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WrapError {
    #[error("HPKE sealing failed")]
    Seal,
    #[error("the key metadata is not a Blindwatch wrapped key")]
    Format,
    #[error(
        "the key is wrapped to platform key {found}, but this platform holds {expected}: the package was sealed for another platform key"
    )]
    WrongKey { found: KeyId, expected: KeyId },
    #[error(
        "the wrapped key for column `{column}` does not open (wrong platform key, or the package was altered)"
    )]
    Open { column: String },
}

impl crate::PlainJson for WrappedKey {}

impl WrappedKey {
    pub fn to_metadata(&self) -> Vec<u8> {
        crate::plain_json(self)
    }
    pub fn from_metadata(bytes: &[u8]) -> Result<WrappedKey, WrapError> {
        serde_json::from_slice(bytes).map_err(|_| WrapError::Format)
    }
}

pub fn wrap_key(
    public: &PlatformPublicKey,
    column: &str,
    key: &[u8],
) -> Result<WrappedKey, WrapError> {
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &public.key,
        INFO,
        key,
        column.as_bytes(),
        &mut rand_core::UnwrapErr(rand_core::OsRng),
    )
    .map_err(|_| WrapError::Seal)?;
    Ok(WrappedKey {
        v: 1,
        kid: public.id.clone(),
        col: column.to_owned(),
        enc: B64.encode(enc.to_bytes()),
        ct: B64.encode(ct),
    })
}

pub fn unwrap_key(
    private: &PlatformPrivateKey,
    wrapped: &WrappedKey,
) -> Result<Zeroizing<Vec<u8>>, WrapError> {
    if wrapped.kid != private.id {
        return Err(WrapError::WrongKey {
            found: wrapped.kid.clone(),
            expected: private.id.clone(),
        });
    }
    let open_err = || WrapError::Open {
        column: wrapped.col.clone(),
    };
    let enc_bytes = B64.decode(&wrapped.enc).map_err(|_| open_err())?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc_bytes).map_err(|_| open_err())?;
    let ct = B64.decode(&wrapped.ct).map_err(|_| open_err())?;
    hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        &private.key,
        &enc,
        INFO,
        &ct,
        wrapped.col.as_bytes(),
    )
    .map(Zeroizing::new)
    .map_err(|_| open_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_column_binding() {
        let (sk, pk) = PlatformPrivateKey::generate();
        let w = wrap_key(&pk, "visit_date", &[9u8; 32]).unwrap();
        assert_eq!(*unwrap_key(&sk, &w).unwrap(), vec![9u8; 32]);
        let parsed = WrappedKey::from_metadata(&w.to_metadata()).unwrap();
        assert_eq!(parsed, w);
        let mut moved = w.clone();
        moved.col = "department".into();
        assert_eq!(
            unwrap_key(&sk, &moved),
            Err(WrapError::Open {
                column: "department".into()
            })
        );
        let (other, _) = PlatformPrivateKey::generate();
        assert!(matches!(
            unwrap_key(&other, &w),
            Err(WrapError::WrongKey { .. })
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = PlatformPrivateKey::generate();
        sk.write(&dir.path().join("p.key")).unwrap();
        pk.write(&dir.path().join("p.pub")).unwrap();
        let sk2 = PlatformPrivateKey::read(&dir.path().join("p.key")).unwrap();
        let pk2 = PlatformPublicKey::read(&dir.path().join("p.pub")).unwrap();
        assert_eq!(sk2.id(), pk2.id());
        let w = wrap_key(&pk2, "c", b"k").unwrap();
        assert_eq!(&**unwrap_key(&sk2, &w).unwrap(), b"k");
    }
}
