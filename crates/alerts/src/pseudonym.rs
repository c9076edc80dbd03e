//! Subject pseudonyms under the deployment key.

use std::fmt;
use std::path::Path;

use blindwatch_crypto::keys::{KeyError, KeyFileKind, read_fixed};
use ring::hmac;

/// Crockford's base32 alphabet: no I, L, O, U, so codes read aloud without confusion.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Derives subject keys and display pseudonyms from tokens.
pub struct Pseudonymizer {
    key: hmac::Key,
}

/// The stable key of a subject in the alert store: HMAC-SHA256(deployment key, kind ‖ token).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectKey(String);

impl SubjectKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_stored(key: String) -> SubjectKey {
        SubjectKey(key)
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectKey(..)")
    }
}

/// A short display code for a subject, e.g. `P-7K3Q9-XD2MB` (a letter for the kind, then 50
/// bits of the subject key). Officers and alerts use it instead of any identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct Pseudonym(String);

impl Pseudonym {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Reads a pseudonym an officer typed or a client sent, e.g. `P-7K3Q9-XD2MB` (lowercase
    /// is accepted). None unless it has the shape this crate gives out: a kind letter and
    /// two groups of five Crockford base32 characters.
    pub fn parse(s: &str) -> Option<Pseudonym> {
        let s = s.trim().to_ascii_uppercase();
        let b = s.as_bytes();
        let shaped = b.len() == 13
            && b"PTAVNX".contains(&b[0])
            && b[1] == b'-'
            && b[7] == b'-'
            && b[2..7]
                .iter()
                .chain(&b[8..13])
                .all(|c| ALPHABET.contains(c));
        shaped.then_some(Pseudonym(s))
    }

    /// Only this crate derives pseudonyms; stored ones are read back through here.
    pub(crate) fn from_stored(s: String) -> Pseudonym {
        Pseudonym(s)
    }
}

impl fmt::Display for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn kind_letter(kind: &str) -> char {
    match kind {
        "person" => 'P',
        "phone" => 'T',
        "address" => 'A',
        "plate" => 'V',
        "name" => 'N',
        _ => 'X',
    }
}

impl Pseudonymizer {
    pub fn new(secret: &[u8; 32]) -> Pseudonymizer {
        Pseudonymizer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Reads the deployment key (`keys/deployment.key`).
    pub fn read(path: &Path) -> Result<Pseudonymizer, KeyError> {
        let secret = read_fixed::<32>(path, KeyFileKind::Deployment)?;
        Ok(Pseudonymizer::new(&secret))
    }

    /// The subject key and pseudonym of a token of identifier kind `kind`.
    pub fn subject(&self, kind: &str, token: &[u8]) -> (SubjectKey, Pseudonym) {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"blindwatch-subject-v1\x1f");
        ctx.update(kind.as_bytes());
        ctx.update(b"\x1f");
        ctx.update(token);
        let tag = ctx.sign();
        let bytes = tag.as_ref();
        let mut bits = u64::from_be_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ]) >> 14;
        let mut code = [0u8; 10];
        for c in code.iter_mut().rev() {
            *c = ALPHABET[(bits & 31) as usize];
            bits >>= 5;
        }
        let code = String::from_utf8_lossy(&code).into_owned();
        let pseudonym = format!("{}-{}-{}", kind_letter(kind), &code[..5], &code[5..]);
        (SubjectKey(hex::encode(bytes)), Pseudonym(pseudonym))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_keyed_and_kind_bound() {
        let a = Pseudonymizer::new(&[1; 32]);
        let b = Pseudonymizer::new(&[2; 32]);
        let token = [7u8; 16];
        let (k1, p1) = a.subject("person", &token);
        let (k2, p2) = a.subject("person", &token);
        assert_eq!((k1.clone(), p1.clone()), (k2, p2));
        assert_ne!(a.subject("person", &token).0, b.subject("person", &token).0);
        assert_ne!(a.subject("phone", &token).0, k1);
        assert!(p1.as_str().starts_with("P-"));
        assert_eq!(p1.as_str().len(), 13);
        assert!(a.subject("address", &token).1.as_str().starts_with("A-"));
        assert_eq!(format!("{k1:?}"), "SubjectKey(..)");
    }

    #[test]
    fn parse_accepts_only_pseudonym_shapes() {
        let (_, p) = Pseudonymizer::new(&[1; 32]).subject("person", &[7u8; 16]);
        assert_eq!(Pseudonym::parse(p.as_str()), Some(p.clone()));
        assert_eq!(
            Pseudonym::parse(&p.as_str().to_ascii_lowercase()),
            Some(p.clone())
        );
        for bad in [
            "",
            "P-7K3Q9-XD2M",
            "P-7K3Q9-XD2MBB",
            "Q-7K3Q9-XD2MB",
            "P_7K3Q9-XD2MB",
            "P-7K3Q9-XD2MU",
            "13800138000",
            "P-7K3Q9-XD2M\u{e9}",
        ] {
            assert_eq!(Pseudonym::parse(bad), None, "{bad}");
        }
    }
}
