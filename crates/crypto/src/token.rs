//! Tokens: 16-byte keyed pseudorandom values that stand in for identifiers.
//!
//! [`Tokenizer`] is the seam between the partner's sealing code and the way tokens are made.
//! This module has the consortium mode: HMAC-SHA256 under a per-kind key derived with HKDF
//! from a linkage key that the partners share and the platform never holds. The blind (OPRF)
//! mode ([`crate::blind::BlindTokenizer`]) implements the same trait.

use std::fmt;

use blindwatch_common::{IdentifierKind, RawIdentifier};
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use crate::keys::{self, KeyFileKind, KeyId};

// One length for the token type and the sealed column type that holds tokens.
pub const TOKEN_LEN: usize = blindwatch_contract::SealedType::TOKEN_LEN;

/// A token. It is pseudonymous data, not a secret key, but it still never goes to a log:
/// `Debug` prints nothing of it and there is no `Display`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// Only this crate makes tokens (from a PRF output); everyone else reads them.
    pub(crate) fn from_prf_output(bytes: &[u8]) -> Token {
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&bytes[..TOKEN_LEN]);
        Token(out)
    }
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

/// How the tokens of a contribution were made. Tokens of different modes or keys never
/// join: the manifest records both and the engine compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// HMAC-SHA256 under a shared consortium linkage key.
    Consortium,
    /// RFC 9497 OPRF evaluated by a token authority.
    Blind,
}

impl fmt::Display for TokenMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenMode::Consortium => "consortium",
            TokenMode::Blind => "blind",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token authority could not be reached: {0}")]
    Unreachable(String),
    #[error("the token authority refused the request: {0}")]
    Refused(String),
    #[error("the token authority sent an answer that does not verify: {0}")]
    BadAnswer(String),
    #[error("the local token cache cannot be used: {0}")]
    Cache(String),
}

/// Turns normalised identifiers into tokens, a batch at a time (a blind tokenizer pays a
/// network round trip per batch).
pub trait Tokenizer: Send + Sync {
    fn mode(&self) -> TokenMode;
    /// Names the key behind the tokens, so data tokenised under different keys is kept apart.
    fn key_id(&self) -> &KeyId;
    fn tokenize(&self, inputs: &[&RawIdentifier]) -> Result<Vec<Token>, TokenError>;
    /// Makes what the tokenizer keeps between runs durable (the blind mode's token cache).
    /// Called by the sealer once a run's tokens are all made.
    fn flush(&self) -> Result<(), TokenError> {
        Ok(())
    }
}

/// The consortium's shared linkage key. Held by partners only.
pub struct LinkageKey(Zeroizing<[u8; 32]>);

impl LinkageKey {
    pub fn generate() -> Result<LinkageKey, keys::KeyError> {
        crate::random_secret::<32>().map(LinkageKey)
    }
    pub fn from_bytes(bytes: [u8; 32]) -> LinkageKey {
        LinkageKey(Zeroizing::new(bytes))
    }
    pub fn read(path: &std::path::Path) -> Result<LinkageKey, keys::KeyError> {
        keys::read_fixed::<32>(path, KeyFileKind::Linkage).map(LinkageKey)
    }
    pub fn write(&self, path: &std::path::Path) -> Result<(), keys::KeyError> {
        keys::write_key_file(path, KeyFileKind::Linkage, self.0.as_ref())
    }
}

/// Consortium mode: token = first 16 bytes of HMAC-SHA256(K_kind, kind ‖ 0x1f ‖ value),
/// with K_kind = HKDF-SHA256(linkage key, salt "blindwatch-linkage-v1", info kind).
pub struct ConsortiumTokenizer {
    keys: KindKeys,
    key_id: KeyId,
}

/// One HMAC key per identifier kind, a field each: looking one up is an exhaustive match,
/// with no fallback to another kind's key.
struct KindKeys {
    person: hmac::Key,
    phone: hmac::Key,
    address: hmac::Key,
    plate: hmac::Key,
    name: hmac::Key,
}

struct HkdfLen(usize);
impl hkdf::KeyType for HkdfLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl ConsortiumTokenizer {
    pub fn new(linkage: &LinkageKey) -> ConsortiumTokenizer {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"blindwatch-linkage-v1")
            .extract(linkage.0.as_ref());
        let derive = |info: &[u8]| -> Zeroizing<[u8; 32]> {
            let mut out = Zeroizing::new([0u8; 32]);
            // PANIC SAFETY: HKDF-Expand fails only past 255 × 32 bytes of output; this asks
            // for 32. A silent fallback would key tokens with zeros.
            #[allow(clippy::expect_used)]
            prk.expand(&[info], HkdfLen(32))
                .and_then(|okm| okm.fill(out.as_mut()))
                .expect("HKDF-Expand to 32 bytes");
            out
        };
        let key = |kind: IdentifierKind| {
            hmac::Key::new(hmac::HMAC_SHA256, derive(kind.as_str().as_bytes()).as_ref())
        };
        let keys = KindKeys {
            person: key(IdentifierKind::Person),
            phone: key(IdentifierKind::Phone),
            address: key(IdentifierKind::Address),
            plate: key(IdentifierKind::Plate),
            name: key(IdentifierKind::Name),
        };
        // The key id is derived under its own label so it says nothing of the HMAC keys.
        let id_material = derive(b"key-id");
        let key_id = KeyId::derive("consortium", id_material.as_ref());
        ConsortiumTokenizer { keys, key_id }
    }

    fn key(&self, kind: IdentifierKind) -> &hmac::Key {
        match kind {
            IdentifierKind::Person => &self.keys.person,
            IdentifierKind::Phone => &self.keys.phone,
            IdentifierKind::Address => &self.keys.address,
            IdentifierKind::Plate => &self.keys.plate,
            IdentifierKind::Name => &self.keys.name,
        }
    }

    pub fn tokenize_one(&self, input: &RawIdentifier) -> Token {
        let tag = hmac::sign(self.key(input.kind()), &input.tokenizer_input());
        Token::from_prf_output(tag.as_ref())
    }
}

impl Tokenizer for ConsortiumTokenizer {
    fn mode(&self) -> TokenMode {
        TokenMode::Consortium
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    fn tokenize(&self, inputs: &[&RawIdentifier]) -> Result<Vec<Token>, TokenError> {
        Ok(inputs.iter().map(|raw| self.tokenize_one(raw)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_common::normalise;

    #[test]
    fn tokens_are_keyed_kind_bound_and_stable() {
        let a = ConsortiumTokenizer::new(&LinkageKey::from_bytes([1; 32]));
        let b = ConsortiumTokenizer::new(&LinkageKey::from_bytes([2; 32]));
        let id = normalise(IdentifierKind::Person, "11010519491231002X").unwrap();
        let same = normalise(IdentifierKind::Person, "110105491231002").unwrap();
        assert_eq!(a.tokenize_one(&id), a.tokenize_one(&same));
        assert_ne!(a.tokenize_one(&id), b.tokenize_one(&id));
        assert_ne!(a.key_id(), b.key_id());
        let name = normalise(IdentifierKind::Name, "东城").unwrap();
        let addr = normalise(IdentifierKind::Address, "东城").unwrap();
        assert_ne!(a.tokenize_one(&name), a.tokenize_one(&addr));
        // Not a bare hash of the value.
        let plain = ring::digest::digest(&ring::digest::SHA256, b"11010519491231002X");
        assert_ne!(&plain.as_ref()[..16], a.tokenize_one(&id).as_bytes());
        assert_eq!(format!("{:?}", a.tokenize_one(&id)), "Token(..)");
    }

    #[test]
    fn known_answer() {
        // Recomputed by hand from the definition with ring's primitives.
        let t = ConsortiumTokenizer::new(&LinkageKey::from_bytes([0; 32]));
        let id = normalise(IdentifierKind::Phone, "13812345678").unwrap();
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"blindwatch-linkage-v1").extract(&[0; 32]);
        let mut k = [0u8; 32];
        prk.expand(&[b"phone"], HkdfLen(32))
            .unwrap()
            .fill(&mut k)
            .unwrap();
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &k),
            b"phone\x1f13812345678",
        );
        assert_eq!(t.tokenize_one(&id).as_bytes(), &tag.as_ref()[..16]);
    }

    #[test]
    fn every_kind_is_keyed_with_its_own_key() {
        let t = ConsortiumTokenizer::new(&LinkageKey::from_bytes([3; 32]));
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"blindwatch-linkage-v1").extract(&[3; 32]);
        let values = [
            (IdentifierKind::Person, "11010519491231002X"),
            (IdentifierKind::Phone, "13812345678"),
            (IdentifierKind::Address, "北京市东城区景山前街4号"),
            (IdentifierKind::Plate, "京A12345"),
            (IdentifierKind::Name, "张三"),
        ];
        assert_eq!(values.len(), IdentifierKind::ALL.len());
        for (kind, raw) in values {
            let id = normalise(kind, raw).unwrap();
            let mut k = [0u8; 32];
            prk.expand(&[kind.as_str().as_bytes()], HkdfLen(32))
                .unwrap()
                .fill(&mut k)
                .unwrap();
            let tag = hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &k),
                &id.tokenizer_input(),
            );
            assert_eq!(
                t.tokenize_one(&id).as_bytes(),
                &tag.as_ref()[..16],
                "{kind:?}"
            );
        }
    }
}
