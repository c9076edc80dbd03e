//! The partner's local token cache: every token it has obtained from the token authority,
//! so that a later seal asks only for values it has not seen.
//!
//! The cache never holds an identifier, not even encrypted: entries are
//! `lookup ‖ token`, where `lookup` is the first 16 bytes of HMAC-SHA256 under a key derived
//! from the partner-held cache key over the tokenizer input. The file is one AES-256-GCM
//! message (ring) under another derived key, with the authority's key id as associated
//! data, and it is replaced atomically (temporary file, fsync, rename). One file per
//! authority key: `tokens-<key id>.cache`, so tokens of a rotated key never mix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blindwatch_common::fsutil;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::{hkdf, hmac};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError, KeyFileKind, KeyId};
use crate::token::{TOKEN_LEN, Token, TokenError};

const MAGIC: &[u8; 8] = b"BWTCACH1";
const LOOKUP_LEN: usize = 16;
const ENTRY_LEN: usize = LOOKUP_LEN + TOKEN_LEN;

/// Creates the cache key file (0600) unless it exists; returns whether it was created.
pub fn ensure_cache_key(path: &Path) -> Result<bool, KeyError> {
    if path.exists() {
        return Ok(false);
    }
    let secret = crate::random_secret::<32>()?;
    keys::write_key_file(path, KeyFileKind::TokenCache, secret.as_ref())?;
    Ok(true)
}

pub struct TokenCache {
    path: Option<PathBuf>,
    key_id: KeyId,
    aead: LessSafeKey,
    index: hmac::Key,
    map: HashMap<[u8; LOOKUP_LEN], Token>,
    dirty: bool,
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(secret: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>, TokenError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"blindwatch-token-cache-v1").extract(secret);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[info], Len(32))
        .and_then(|okm| okm.fill(out.as_mut()))
        .map_err(|_| TokenError::Cache("cannot derive the cache keys".into()))?;
    Ok(out)
}

impl TokenCache {
    /// Opens (or starts) the cache for `key_id` in `dir`, under the key in `key_file`
    /// (created when missing).
    pub fn open(dir: &Path, key_file: &Path, key_id: &KeyId) -> Result<TokenCache, TokenError> {
        ensure_cache_key(key_file).map_err(|e| TokenError::Cache(e.to_string()))?;
        let secret = keys::read_fixed::<32>(key_file, KeyFileKind::TokenCache)
            .map_err(|e| TokenError::Cache(e.to_string()))?;
        let path = dir.join(format!("tokens-{key_id}.cache"));
        let mut cache = TokenCache::with_secret(secret.as_ref(), key_id, Some(path.clone()))?;
        match std::fs::read(&path) {
            Ok(bytes) => cache.load(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TokenError::Cache(format!(
                    "cannot read the token cache {}: {e}",
                    path.display()
                )));
            }
        }
        Ok(cache)
    }

    /// A cache that lives only as long as the tokenizer.
    pub fn in_memory(key_id: &KeyId) -> Result<TokenCache, TokenError> {
        let secret = crate::random_secret::<32>().map_err(|e| TokenError::Cache(e.to_string()))?;
        TokenCache::with_secret(secret.as_ref(), key_id, None)
    }

    fn with_secret(
        secret: &[u8],
        key_id: &KeyId,
        path: Option<PathBuf>,
    ) -> Result<TokenCache, TokenError> {
        let aead_key = derive(secret, b"aead")?;
        let index_key = derive(secret, b"lookup")?;
        let aead = UnboundKey::new(&AES_256_GCM, aead_key.as_ref())
            .map(LessSafeKey::new)
            .map_err(|_| TokenError::Cache("cannot set up AES-256-GCM".into()))?;
        Ok(TokenCache {
            path,
            key_id: key_id.clone(),
            aead,
            index: hmac::Key::new(hmac::HMAC_SHA256, index_key.as_ref()),
            map: HashMap::new(),
            dirty: false,
        })
    }

    fn aad(&self) -> Vec<u8> {
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(self.key_id.as_str().as_bytes());
        aad
    }

    fn load(&mut self, bytes: &[u8], path: &Path) -> Result<(), TokenError> {
        let damaged = || {
            TokenError::Cache(format!(
                "the token cache {} does not open with this partner's cache key (wrong key, or the file is damaged): move it away and seal again to rebuild it",
                path.display()
            ))
        };
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(damaged)?;
        if rest.len() < NONCE_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .aead
            .open_in_place(nonce, Aad::from(self.aad()), buf.as_mut_slice())
            .map_err(|_| damaged())?;
        if !plain.len().is_multiple_of(ENTRY_LEN) {
            return Err(damaged());
        }
        self.map.reserve(plain.len() / ENTRY_LEN);
        for entry in plain.chunks_exact(ENTRY_LEN) {
            let mut lookup = [0u8; LOOKUP_LEN];
            lookup.copy_from_slice(&entry[..LOOKUP_LEN]);
            self.map
                .insert(lookup, Token::from_prf_output(&entry[LOOKUP_LEN..]));
        }
        Ok(())
    }

    /// The cache's key for a tokenizer input (no identifier is kept).
    pub fn lookup_key(&self, tokenizer_input: &[u8]) -> [u8; LOOKUP_LEN] {
        let tag = hmac::sign(&self.index, tokenizer_input);
        let mut out = [0u8; LOOKUP_LEN];
        out.copy_from_slice(&tag.as_ref()[..LOOKUP_LEN]);
        out
    }

    pub fn get(&self, lookup: &[u8; LOOKUP_LEN]) -> Option<Token> {
        self.map.get(lookup).copied()
    }

    pub fn insert(&mut self, lookup: [u8; LOOKUP_LEN], token: Token) {
        if self.map.insert(lookup, token).is_none() {
            self.dirty = true;
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Writes the cache if it changed: encrypted, then temporary file, fsync, rename.
    pub fn save(&mut self) -> Result<(), TokenError> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let mut plain = Zeroizing::new(Vec::with_capacity(self.map.len() * ENTRY_LEN + 16));
        for (lookup, token) in &self.map {
            plain.extend_from_slice(lookup);
            plain.extend_from_slice(token.as_bytes());
        }
        let nonce_bytes =
            crate::random_secret::<NONCE_LEN>().map_err(|e| TokenError::Cache(e.to_string()))?;
        let nonce = Nonce::assume_unique_for_key(*nonce_bytes);
        self.aead
            .seal_in_place_append_tag(nonce, Aad::from(self.aad()), &mut *plain)
            .map_err(|_| TokenError::Cache("cannot encrypt the token cache".into()))?;
        let mut file = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len());
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(nonce_bytes.as_ref());
        file.extend_from_slice(&plain);
        fsutil::replace(&path, &file).map_err(|e| {
            TokenError::Cache(format!(
                "cannot write the token cache {}: {e}",
                path.display()
            ))
        })?;
        self.dirty = false;
        tracing::debug!(entries = self.map.len(), key_id = %self.key_id, "token cache saved");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips_encrypted_and_refuses_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("cache.key");
        let key_id = KeyId::derive("test", b"k");
        let mut cache = TokenCache::open(dir.path(), &key_file, &key_id).unwrap();
        let lookup = cache.lookup_key(b"person\x1f11010519491231002X");
        cache.insert(lookup, Token::from_prf_output(&[9u8; 16]));
        cache.save().unwrap();
        let file = dir.path().join(format!("tokens-{key_id}.cache"));
        let bytes = std::fs::read(&file).unwrap();
        // Neither the value nor the token appears in the file.
        assert!(!bytes.windows(18).any(|w| w == b"11010519491231002X"));
        assert!(!bytes.windows(16).any(|w| w == [9u8; 16]));
        let again = TokenCache::open(dir.path(), &key_file, &key_id).unwrap();
        assert_eq!(again.get(&lookup), Some(Token::from_prf_output(&[9u8; 16])));
        // Another partner's key does not open it; nothing is changed by the refusal.
        let other = dir.path().join("other.key");
        let err = TokenCache::open(dir.path(), &other, &key_id)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not open"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), bytes);
    }
}
