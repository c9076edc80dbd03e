//! Cryptography of Blindwatch, all from well-kept crates (ring, hpke, parquet's modular
//! encryption); what is written here is only the glue and the formats.
//!
//! - [`token`]: the [`token::Tokenizer`] seam and the consortium (HMAC-SHA256) mode.
//! - [`blind`]: the blind mode, RFC 9497 VOPRF (ristretto255-SHA512): the authority's key
//!   and public key, the partner's [`blind::BlindTokenizer`] (which checks every batch's
//!   proof against the pinned public key) and the [`blind::BlindTransport`] seam.
//! - [`token_cache`]: the partner's encrypted local token cache.
//! - [`keys`]: key files (0600, refused when readable by others) and key ids.
//! - [`wrap`]: HPKE (RFC 9180) wrapping of Parquet column keys to the platform's key.
//! - [`sign`]: Ed25519 partner keys and DSSE-style signed envelopes.
//! - [`manifest`]: the signed manifest that travels with every contribution.
//! - [`sealing`]: Parquet encryption properties for sealing and key retrievers for reading.

pub mod blind;
pub mod keys;
pub mod manifest;
pub mod sealing;
pub mod sign;
pub mod token;
pub mod token_cache;
pub mod wrap;

pub use keys::KeyId;

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Types whose JSON encoding cannot fail: a derived `Serialize` over strings, numbers,
/// booleans, options, sequences and maps keyed by strings (serde_json fails only on
/// non-string map keys or on a hand-written `Serialize` that errs). Implement it only for
/// such types: what is signed or hashed is then never an empty stand-in for an error.
pub trait PlainJson: serde::Serialize {}

impl<T: PlainJson> PlainJson for [T] {}

/// The compact JSON of a [`PlainJson`] value (what is signed and hashed).
pub fn plain_json<T: PlainJson + ?Sized>(value: &T) -> Vec<u8> {
    // PANIC SAFETY: a `PlainJson` type serialises without error (see the trait).
    #[allow(clippy::expect_used)]
    serde_json::to_vec(value).expect("a PlainJson value serialises")
}

/// The indented JSON of a [`PlainJson`] value (files people read).
pub fn plain_json_pretty<T: PlainJson + ?Sized>(value: &T) -> Vec<u8> {
    // PANIC SAFETY: as for `plain_json`.
    #[allow(clippy::expect_used)]
    serde_json::to_vec_pretty(value).expect("a PlainJson value serialises")
}

/// Incremental SHA-256 for files that are streamed.
pub struct Sha256(ring::digest::Context);

impl Default for Sha256 {
    fn default() -> Self {
        Sha256(ring::digest::Context::new(&ring::digest::SHA256))
    }
}

impl Sha256 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    pub fn finish_hex(self) -> String {
        hex::encode(self.0.finish())
    }
}

/// Fills a fresh secret from the operating system's generator.
pub fn random_secret<const N: usize>() -> Result<zeroize::Zeroizing<[u8; N]>, keys::KeyError> {
    use ring::rand::SecureRandom;
    let mut out = zeroize::Zeroizing::new([0u8; N]);
    ring::rand::SystemRandom::new()
        .fill(out.as_mut())
        .map_err(|_| keys::KeyError::Random)?;
    Ok(out)
}
