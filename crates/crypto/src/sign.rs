//! Ed25519 signing keys (ring) and DSSE envelopes (a payload, its type, and signatures over
//! the DSSE pre-authentication encoding), used for contribution manifests.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{self, Ed25519KeyPair, KeyPair};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError, KeyFileKind, KeyId};

/// A party's Ed25519 signing key (a partner's, or the platform's audit-log key).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    id: KeyId,
}

/// The public half, as registered on the platform.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    bytes: [u8; 32],
    id: KeyId,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

fn ed25519_id(public: &[u8]) -> KeyId {
    KeyId::derive("ed25519", public)
}

impl SigningKey {
    pub fn generate() -> Result<SigningKey, KeyError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| KeyError::Random)?;
        SigningKey::from_pkcs8(Zeroizing::new(doc.as_ref().to_vec())).ok_or(KeyError::Random)
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Option<SigningKey> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).ok()?;
        let id = ed25519_id(pair.public_key().as_ref());
        Some(SigningKey { pair, pkcs8, id })
    }

    pub fn read(path: &Path, kind: KeyFileKind) -> Result<SigningKey, KeyError> {
        let pkcs8 = keys::read_key_file(path, kind)?;
        SigningKey::from_pkcs8(pkcs8).ok_or(KeyError::Malformed {
            path: path.to_owned(),
            why: "not an Ed25519 PKCS#8 key",
        })
    }

    pub fn write(&self, path: &Path, kind: KeyFileKind) -> Result<(), KeyError> {
        keys::write_key_file(path, kind, &self.pkcs8)
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey {
            bytes,
            id: self.id.clone(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8]) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(VerifyingKey {
            id: ed25519_id(&bytes),
            bytes,
        })
    }
    pub fn read(path: &Path, kind: KeyFileKind) -> Result<VerifyingKey, KeyError> {
        let bytes = keys::read_key_file(path, kind)?;
        VerifyingKey::from_bytes(&bytes).ok_or(KeyError::Malformed {
            path: path.to_owned(),
            why: "not a 32-byte Ed25519 public key",
        })
    }
    pub fn write(&self, path: &Path, kind: KeyFileKind) -> Result<(), KeyError> {
        keys::write_key_file(path, kind, &self.bytes)
    }
    pub fn id(&self) -> &KeyId {
        &self.id
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
    pub fn verify(&self, message: &[u8], signature_bytes: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.bytes)
            .verify(message, signature_bytes)
            .is_ok()
    }
}

/// A DSSE envelope (`payloadType`, base64 `payload`, `signatures`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeSignature {
    pub keyid: KeyId,
    pub sig: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("the signed envelope is not valid JSON of the expected shape")]
    Format,
    #[error("the envelope holds a `{found}` payload, not a `{expected}`")]
    PayloadType { found: String, expected: String },
    #[error("the envelope carries no signature by key {0}")]
    NoSignature(KeyId),
    #[error(
        "the signature by key {0} does not verify: the envelope was altered or signed by another key"
    )]
    BadSignature(KeyId),
}

/// DSSE pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

impl crate::PlainJson for Envelope {}

impl Envelope {
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let sig = key.sign(&pae(payload_type, payload));
        Envelope {
            payload_type: payload_type.to_owned(),
            payload: B64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: key.id().clone(),
                sig: B64.encode(sig),
            }],
        }
    }

    pub fn from_json(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(|_| EnvelopeError::Format)
    }

    pub fn to_json(&self) -> Vec<u8> {
        crate::plain_json_pretty(self)
    }

    /// The key ids that claim to have signed (unverified; to look the key up).
    pub fn signer_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.signatures.iter().map(|s| &s.keyid)
    }

    /// Verifies the signature by `key` and returns the payload.
    pub fn verify(
        &self,
        expected_type: &str,
        key: &VerifyingKey,
    ) -> Result<Vec<u8>, EnvelopeError> {
        if self.payload_type != expected_type {
            return Err(EnvelopeError::PayloadType {
                found: self.payload_type.clone(),
                expected: expected_type.to_owned(),
            });
        }
        let payload = B64
            .decode(&self.payload)
            .map_err(|_| EnvelopeError::Format)?;
        let sig = self
            .signatures
            .iter()
            .find(|s| &s.keyid == key.id())
            .ok_or_else(|| EnvelopeError::NoSignature(key.id().clone()))?;
        let sig_bytes = B64
            .decode(&sig.sig)
            .map_err(|_| EnvelopeError::BadSignature(key.id().clone()))?;
        if key.verify(&pae(&self.payload_type, &payload), &sig_bytes) {
            Ok(payload)
        } else {
            Err(EnvelopeError::BadSignature(key.id().clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_signs_and_detects_changes() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        let env = Envelope::sign("t", b"hello", &key);
        let parsed = Envelope::from_json(&env.to_json()).unwrap();
        assert_eq!(parsed.verify("t", &vk).unwrap(), b"hello");
        assert!(matches!(
            parsed.verify("u", &vk),
            Err(EnvelopeError::PayloadType { .. })
        ));
        let mut tampered = parsed.clone();
        tampered.payload = B64.encode(b"hellO");
        assert_eq!(
            tampered.verify("t", &vk),
            Err(EnvelopeError::BadSignature(vk.id().clone()))
        );
        let other = SigningKey::generate().unwrap().verifying_key();
        assert!(matches!(
            parsed.verify("t", &other),
            Err(EnvelopeError::NoSignature(_))
        ));
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        key.write(&dir.path().join("a.key"), KeyFileKind::PartnerSigning)
            .unwrap();
        key.verifying_key()
            .write(&dir.path().join("a.pub"), KeyFileKind::PartnerPublic)
            .unwrap();
        let k2 = SigningKey::read(&dir.path().join("a.key"), KeyFileKind::PartnerSigning).unwrap();
        let v2 = VerifyingKey::read(&dir.path().join("a.pub"), KeyFileKind::PartnerPublic).unwrap();
        assert_eq!(k2.id(), v2.id());
        assert!(v2.verify(b"m", &k2.sign(b"m")));
    }
}
