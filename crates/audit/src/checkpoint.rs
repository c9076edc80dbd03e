//! Checkpoints in the C2SP `tlog-checkpoint` format, signed as C2SP signed notes with
//! Ed25519.
//!
//! ```text
//! <origin>\n
//! <tree size, decimal>\n
//! <base64 root hash>\n
//! \n
//! — <key name> <base64(4-byte key id ‖ 64-byte Ed25519 signature)>\n
//! ```
//!
//! The signature covers the note text: the three body lines including their newlines.
//! The key id is the first 4 bytes of `SHA-256(key name ‖ 0x0A ‖ 0x01 ‖ public key)`.
//! This log uses its origin as its key name.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

use crate::error::AuditError;
use crate::merkle::{Hash, sha256};

/// Signature type byte of Ed25519 in C2SP signed notes.
const ED25519_TYPE: u8 = 0x01;
/// Em dash + space that starts every signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// Bound on signature lines accepted, so a hostile note cannot make us loop for long.
const MAX_SIGNATURES: usize = 100;

fn check_name(name: &str) -> Result<(), AuditError> {
    let err = |what| AuditError::InvalidOrigin { what };
    if name.is_empty() {
        return Err(err("it is empty"));
    }
    if name.len() > 256 {
        return Err(err("it is longer than 256 bytes"));
    }
    if !name.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(err(
            "it contains spaces, control characters or non-ASCII text",
        ));
    }
    if name.contains('+') {
        return Err(err("it contains '+', which signed-note key names may not"));
    }
    Ok(())
}

fn key_id(name: &str, key: &[u8; 32]) -> [u8; 4] {
    let mut data = Vec::with_capacity(name.len() + 2 + 32);
    data.extend_from_slice(name.as_bytes());
    data.push(b'\n');
    data.push(ED25519_TYPE);
    data.extend_from_slice(key);
    let h = sha256(&data);
    [h[0], h[1], h[2], h[3]]
}

/// The public half of a log key: key name (= log origin), Ed25519 key and key id.
#[derive(Clone, PartialEq, Eq)]
pub struct LogPublicKey {
    name: String,
    key: [u8; 32],
    id: [u8; 4],
}

impl LogPublicKey {
    /// A verifier for `name` (the log origin) and a raw 32-byte Ed25519 public key.
    pub fn new(name: &str, key: [u8; 32]) -> Result<Self, AuditError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        })
    }

    /// Parses a signed-note verifier key: `<name>+<hex key id>+<base64(0x01 ‖ key)>`.
    pub fn from_vkey(vkey: &str) -> Result<Self, AuditError> {
        let err = |what| AuditError::InvalidVerifierKey { what };
        let vkey = vkey.trim();
        // Split from the left: names never contain '+', base64 may.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err("it does not have three `+`-separated parts"));
        };
        let raw = B64
            .decode(key_b64)
            .map_err(|_| err("the key part is not base64"))?;
        let key = match raw.split_first() {
            Some((&ED25519_TYPE, key)) => <[u8; 32]>::try_from(key).ok(),
            _ => None,
        }
        .ok_or_else(|| err("the key part is not 0x01 followed by a 32-byte Ed25519 key"))?;
        let public = Self::new(name, key)?;
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| err("the key id is not 8 hex digits"))?;
        if id != public.id {
            return Err(err("the key id does not match the name and key"));
        }
        Ok(public)
    }

    /// The signed-note verifier key string, for handing to independent verifiers.
    pub fn to_vkey(&self) -> String {
        let mut raw = Vec::with_capacity(33);
        raw.push(ED25519_TYPE);
        raw.extend_from_slice(&self.key);
        format!("{}+{}+{}", self.name, hex::encode(self.id), B64.encode(raw))
    }

    /// Key name, which is the log origin.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.key)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Debug for LogPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

impl fmt::Display for LogPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_vkey())
    }
}

/// The log's signing key: an Ed25519 key pair and the origin it signs for.
pub struct LogSigner {
    key_pair: Ed25519KeyPair,
    public: LogPublicKey,
}

impl LogSigner {
    /// Wraps a key pair; `origin` names the log in every checkpoint and is the key name.
    pub fn new(origin: &str, key_pair: Ed25519KeyPair) -> Result<Self, AuditError> {
        let key: [u8; 32] =
            key_pair
                .public_key()
                .as_ref()
                .try_into()
                .map_err(|_| AuditError::InvalidKey {
                    reason: "the public key is not 32 bytes".into(),
                })?;
        Ok(Self {
            public: LogPublicKey::new(origin, key)?,
            key_pair,
        })
    }

    /// Loads an Ed25519 key from PKCS#8 v1 or v2 bytes (DER).
    pub fn from_pkcs8(origin: &str, pkcs8: &[u8]) -> Result<Self, AuditError> {
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| {
            AuditError::InvalidKey {
                reason: e.to_string(),
            }
        })?;
        Self::new(origin, key_pair)
    }

    /// The verifier key.
    pub fn public_key(&self) -> &LogPublicKey {
        &self.public
    }

    /// Signs a checkpoint for a tree of `size` leaves with root `root`.
    pub(crate) fn sign(&self, size: u64, root: &Hash) -> Checkpoint {
        let body = checkpoint_body(&self.public.name, size, root);
        let sig = self.key_pair.sign(body.as_bytes());
        let mut blob = Vec::with_capacity(4 + 64);
        blob.extend_from_slice(&self.public.id);
        blob.extend_from_slice(sig.as_ref());
        let text = format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.public.name,
            B64.encode(blob)
        );
        Checkpoint {
            origin: self.public.name.clone(),
            size,
            root: *root,
            text,
        }
    }
}

impl fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("LogSigner")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// A signed checkpoint: the log's origin, tree size and root hash, plus the signed note text.
#[derive(Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    text: String,
}

impl Checkpoint {
    /// The log origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries the checkpoint covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash of the tree of the first `size` entries.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// The complete signed note, as stored and as handed to verifiers.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Parses a signed note and checks that it carries a valid signature by `key` and
    /// names `key`'s origin. Signatures by other keys (e.g. witnesses) are ignored.
    pub fn parse_and_verify(text: &str, key: &LogPublicKey) -> Result<Self, AuditError> {
        let err = |what: &str| AuditError::MalformedCheckpoint { what: what.into() };
        let Some(split) = text.find("\n\n") else {
            return Err(err(
                "there is no blank line between the body and the signatures",
            ));
        };
        let (body, sigs) = (&text[..=split], &text[split + 2..]);
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(err("it contains control characters"));
        }
        let lines: Vec<&str> = body.trim_end_matches('\n').split('\n').collect();
        let (Some(origin), Some(size), Some(root)) = (lines.first(), lines.get(1), lines.get(2))
        else {
            return Err(err(
                "the body has fewer than three lines (origin, size, root)",
            ));
        };
        if origin.is_empty() {
            return Err(err("the origin line is empty"));
        }
        if lines[3..].iter().any(|l| l.is_empty()) {
            return Err(err("an extension line is empty"));
        }
        let size = parse_size(size)
            .ok_or_else(|| err("the size line is not a decimal number without leading zeros"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| err("the root line is not the base64 of 32 bytes"))?;
        if *origin != key.name {
            return Err(err(&format!(
                "its origin is not `{}`, the log this key signs",
                key.name
            )));
        }
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(err(
                "the signature block is empty or does not end with a newline",
            ));
        }
        let mut verified = false;
        for (n, line) in sigs.trim_end_matches('\n').split('\n').enumerate() {
            if n >= MAX_SIGNATURES {
                return Err(err("it has too many signature lines"));
            }
            let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
                return Err(err(
                    "a signature line does not start with an em dash and a space",
                ));
            };
            let Some((name, sig_b64)) = rest.split_once(' ') else {
                return Err(err(
                    "a signature line has no space between key name and signature",
                ));
            };
            let sig = B64
                .decode(sig_b64)
                .map_err(|_| err("a signature is not base64"))?;
            if sig.len() < 5 {
                return Err(err("a signature is shorter than a key id"));
            }
            if name == key.name && sig[..4] == key.id && key.verify(body.as_bytes(), &sig[4..]) {
                verified = true;
            }
        }
        if !verified {
            return Err(AuditError::BadSignature {
                key: format!("{}+{}", key.name, hex::encode(key.id)),
            });
        }
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            text: text.to_owned(),
        })
    }
}

fn parse_size(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("origin", &self.origin)
            .field("size", &self.size)
            .field("root", &B64.encode(self.root))
            .finish()
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn signer() -> LogSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        LogSigner::from_pkcs8("police.example/audit", pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn signs_and_verifies_the_c2sp_format() {
        let s = signer();
        let root = sha256(b"root");
        let cp = s.sign(42, &root);
        let lines: Vec<&str> = cp.text().split('\n').collect();
        assert_eq!(lines[0], "police.example/audit");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], B64.encode(root));
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("\u{2014} police.example/audit "));
        assert_eq!(lines[5], "");
        let sig = B64.decode(lines[4].rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 68);
        assert_eq!(sig[..4], s.public_key().key_id());

        let parsed = Checkpoint::parse_and_verify(cp.text(), s.public_key()).unwrap();
        assert_eq!(parsed, cp);
    }

    #[test]
    fn key_id_follows_signed_note() {
        // Key id = SHA-256(name ‖ "\n" ‖ 0x01 ‖ key)[:4], independently computed here.
        let s = signer();
        let pk = s.public_key();
        let mut data = b"police.example/audit\n\x01".to_vec();
        data.extend_from_slice(pk.key_bytes());
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        assert_eq!(pk.key_id(), digest.as_ref()[..4]);
        let round = LogPublicKey::from_vkey(&pk.to_vkey()).unwrap();
        assert_eq!(&round, pk);
    }

    #[test]
    fn vkeys_round_trip_whatever_the_base64_holds() {
        // Base64 uses '+': the parser must split name and key id from the left.
        for _ in 0..64 {
            let s = signer();
            let vkey = s.public_key().to_vkey();
            assert_eq!(
                &LogPublicKey::from_vkey(&vkey).unwrap(),
                s.public_key(),
                "{vkey}"
            );
        }
        // A fixed key whose encoding contains '+' and '/'.
        let pk = LogPublicKey::new("police.example/audit", [0xfb; 32]).unwrap();
        assert!(pk.to_vkey().split_once('+').unwrap().1.matches('+').count() >= 2);
        assert_eq!(LogPublicKey::from_vkey(&pk.to_vkey()).unwrap(), pk);
    }

    #[test]
    fn rejects_tampering_and_foreign_keys() {
        let s = signer();
        let cp = s.sign(5, &sha256(b"r"));
        let tampered = cp.text().replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            Checkpoint::parse_and_verify(&tampered, s.public_key()),
            Err(AuditError::BadSignature { .. })
        ));
        let other = signer();
        assert!(Checkpoint::parse_and_verify(cp.text(), other.public_key()).is_err());
        for bad in [
            "",
            "police.example/audit\n05\nAAAA\n\n",
            "police.example/audit\n5\n\n\u{2014} x AAAA\n",
        ] {
            assert!(Checkpoint::parse_and_verify(bad, s.public_key()).is_err());
        }
        // A co-signature by an unknown witness is ignored, ours still counts.
        let cosigned = format!("{}\u{2014} witness.example AAAAAAAAAAAA\n", cp.text());
        assert!(Checkpoint::parse_and_verify(&cosigned, s.public_key()).is_ok());
    }

    #[test]
    fn rejects_bad_origins() {
        let pk = [7u8; 32];
        for bad in ["", "a b", "a+b", "名字"] {
            assert!(LogPublicKey::new(bad, pk).is_err());
        }
        assert!(LogPublicKey::from_vkey("nonsense").is_err());
    }
}
