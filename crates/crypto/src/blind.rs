//! Blind tokens: RFC 9497 VOPRF (verifiable mode, 0x01) with the ristretto255-SHA512 suite,
//! through the `voprf` crate.
//!
//! - [`AuthorityKey`] is the token authority's private key. The authority evaluates a batch
//!   of *blinded* elements ([`AuthorityKey::evaluate_blinded`]) and proves, with one DLEQ
//!   proof for the whole batch, that it used the key behind its public key
//!   ([`AuthorityPublicKey`]). It never sees an identifier.
//! - [`BlindTokenizer`] is the partner's side of the protocol and a [`Tokenizer`]: for every
//!   identifier it has not tokenised before it hashes `kind ‖ 0x1f ‖ value` to the group,
//!   multiplies by a fresh random blind, sends only the blinded element through a
//!   [`BlindTransport`] (the HTTP client lives in `blindwatch-tokens`), checks the batch's
//!   proof against the authority public key the partner *pinned*, unblinds and finalises;
//!   the token is the first 16 bytes of the 64-byte output. An answer under any other key —
//!   a swapped key, a man in the middle — fails the proof, and the seal with it. Tokens it
//!   has made are kept in an encrypted [`TokenCache`] as each batch arrives, so a later seal
//!   (or a retry after a refusal) asks only for values it has not got.
//!
//! Plain OPRF mode is not offered: its answers cannot be checked, so whoever answers can
//! substitute a key of their own and later compute the token of any guessed identifier.
//!
//! Only the key holder can compute a token, and the holder learns nothing of the inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use blindwatch_common::RawIdentifier;
use voprf::{
    BlindedElement, EvaluationElement, Group, Proof, Ristretto255, VoprfClient, VoprfServer,
};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError, KeyFileKind, KeyId};
use crate::token::{Token, TokenError, TokenMode, Tokenizer};
use crate::token_cache::TokenCache;

/// The RFC 9497 suite identifier.
pub const OPRF_SUITE: &str = "ristretto255-SHA512";
/// The RFC 9497 mode: verifiable (VOPRF, mode 0x01).
pub const OPRF_MODE: &str = "voprf";
/// Bytes of one serialised group element (blinded or evaluated, or a public key).
pub const ELEMENT_LEN: usize = 32;
/// Bytes of a batch's DLEQ proof (two scalars); an answer is the proof, then the elements.
pub const PROOF_LEN: usize = 64;
/// Most elements in one batch: RFC 9497 numbers a batch's elements with two bytes.
pub const MAX_BATCH: usize = u16::MAX as usize;
/// Elements a partner sends per request unless the authority allows fewer.
pub const DEFAULT_REQUEST_ELEMENTS: usize = 2048;
/// The file name under which a partner records the authority key it trusts (beside its own
/// key) and the platform the deployment's authority key (in its `keys/`).
pub const AUTHORITY_PUBLIC_KEY_FILE: &str = "token-authority.pub";

const KEY_ID_LABEL: &str = "voprf-ristretto255-sha512";

type Suite = Ristretto255;
type Elem = <Suite as Group>::Elem;
/// A value to tokenise: its cache lookup key and its tokenizer input.
type Missing = ([u8; 16], Zeroizing<Vec<u8>>);

#[derive(Debug, thiserror::Error)]
pub enum BlindError {
    #[error("the request is not a whole number of {ELEMENT_LEN}-byte group elements ({0} bytes)")]
    Length(usize),
    #[error(
        "element {index} of the request is not a valid ristretto255 element (or is the identity)"
    )]
    BadElement { index: usize },
    #[error("the OPRF key bytes are not a valid non-zero ristretto255 scalar")]
    BadKey,
    #[error("the bytes are not a token authority public key (a non-identity ristretto255 element)")]
    BadPublicKey,
    #[error("the OPRF input is empty or longer than 65535 bytes")]
    Input,
    #[error("{0} elements in one batch; the most is {MAX_BATCH}")]
    TooMany(usize),
}

/// The token authority's public key: what partners pin and verify every batch against, and
/// what names the key (its [`KeyId`] is derived from it and recorded in every manifest).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorityPublicKey {
    bytes: [u8; ELEMENT_LEN],
    elem: Elem,
    key_id: KeyId,
}

impl std::fmt::Debug for AuthorityPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthorityPublicKey({})", self.key_id)
    }
}

impl AuthorityPublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<AuthorityPublicKey, BlindError> {
        if bytes.len() != ELEMENT_LEN {
            return Err(BlindError::BadPublicKey);
        }
        let elem =
            <Suite as Group>::deserialize_elem(bytes).map_err(|_| BlindError::BadPublicKey)?;
        let mut out = [0u8; ELEMENT_LEN];
        out.copy_from_slice(bytes);
        Ok(AuthorityPublicKey {
            bytes: out,
            elem,
            key_id: KeyId::derive(KEY_ID_LABEL, bytes),
        })
    }

    fn from_elem(elem: Elem) -> AuthorityPublicKey {
        let serialized = <Suite as Group>::serialize_elem(elem);
        let mut bytes = [0u8; ELEMENT_LEN];
        bytes.copy_from_slice(&serialized);
        AuthorityPublicKey {
            bytes,
            elem,
            key_id: KeyId::derive(KEY_ID_LABEL, &bytes),
        }
    }

    pub fn as_bytes(&self) -> &[u8; ELEMENT_LEN] {
        &self.bytes
    }

    /// The key's public name: the first 8 bytes of SHA-256 over a label and the key.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    pub fn read(path: &Path) -> Result<AuthorityPublicKey, KeyError> {
        let bytes = keys::read_key_file(path, KeyFileKind::TokenAuthorityPublic)?;
        AuthorityPublicKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
            why: "not a ristretto255 public key",
        })
    }

    /// Writes the public key file (refuses to overwrite).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        keys::write_key_file(path, KeyFileKind::TokenAuthorityPublic, &self.bytes)
    }
}

/// The token authority's VOPRF private key. Only the authority holds it; the platform
/// never does. The scalar is zeroed when dropped (voprf's `VoprfServer` is `ZeroizeOnDrop`).
pub struct AuthorityKey {
    server: VoprfServer<Suite>,
    public: AuthorityPublicKey,
}

impl AuthorityKey {
    /// A fresh random key.
    pub fn generate() -> Result<AuthorityKey, KeyError> {
        let server =
            VoprfServer::<Suite>::new(&mut rand::rngs::OsRng).map_err(|_| KeyError::Random)?;
        Ok(AuthorityKey::from_server(server))
    }

    /// A key from its 32-byte scalar encoding.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<AuthorityKey, BlindError> {
        let server = VoprfServer::<Suite>::new_with_key(bytes).map_err(|_| BlindError::BadKey)?;
        Ok(AuthorityKey::from_server(server))
    }

    /// RFC 9497 `DeriveKeyPair(seed, info)` in VOPRF mode (used by the test vectors).
    pub fn derive(seed: &[u8], info: &[u8]) -> Result<AuthorityKey, BlindError> {
        let server =
            VoprfServer::<Suite>::new_from_seed(seed, info).map_err(|_| BlindError::BadKey)?;
        Ok(AuthorityKey::from_server(server))
    }

    fn from_server(server: VoprfServer<Suite>) -> AuthorityKey {
        let public = AuthorityPublicKey::from_elem(server.get_public_key());
        AuthorityKey { server, public }
    }

    pub fn read(path: &Path) -> Result<AuthorityKey, KeyError> {
        let bytes = keys::read_fixed::<32>(path, KeyFileKind::TokenAuthority)?;
        AuthorityKey::from_secret_bytes(bytes.as_ref()).map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
            why: "not a ristretto255 OPRF key",
        })
    }

    /// Writes the key file (0600, refuses to overwrite): the 32-byte scalar.
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        // `serialize` is scalar ‖ public element.
        let both = Zeroizing::new(self.server.serialize().to_vec());
        keys::write_key_file(path, KeyFileKind::TokenAuthority, &both[..32])
    }

    pub fn public_key(&self) -> &AuthorityPublicKey {
        &self.public
    }

    /// The public name of this key, recorded in every blind package's manifest.
    pub fn key_id(&self) -> &KeyId {
        self.public.key_id()
    }

    /// Evaluates a batch of blinded elements, given as concatenated 32-byte encodings, and
    /// returns the batch's proof followed by the evaluated elements in the same order. The
    /// whole batch is refused if any element is malformed: nothing is evaluated then.
    pub fn evaluate_blinded(&self, blinded: &[u8]) -> Result<Vec<u8>, BlindError> {
        self.evaluate_batch(&parse_blinded(blinded)?)
    }

    /// Evaluates a batch that [`parse_blinded`] accepted: one DLEQ proof for all of it.
    pub fn evaluate_batch(&self, batch: &BlindedBatch) -> Result<Vec<u8>, BlindError> {
        let result = self
            .server
            .batch_blind_evaluate(&mut rand::rngs::OsRng, &batch.0)
            .map_err(|_| BlindError::TooMany(batch.len()))?;
        let mut out = Vec::with_capacity(PROOF_LEN + batch.len() * ELEMENT_LEN);
        out.extend_from_slice(&result.proof.serialize());
        for element in &result.messages {
            out.extend_from_slice(&element.serialize());
        }
        Ok(out)
    }

    /// The token of `raw` computed directly with the key (what a blind evaluation yields).
    /// Only the key holder can do this; it exists for tests and checks.
    pub fn token_of(&self, raw: &RawIdentifier) -> Result<Token, BlindError> {
        let output = self.prf(&raw.tokenizer_input())?;
        Ok(Token::from_prf_output(output.as_ref()))
    }

    /// The full 64-byte VOPRF output for `input` (RFC 9497 `Evaluate`).
    pub fn prf(&self, input: &[u8]) -> Result<Zeroizing<Vec<u8>>, BlindError> {
        self.server
            .evaluate(input)
            .map(|o| Zeroizing::new(o.to_vec()))
            .map_err(|_| BlindError::Input)
    }
}

/// A request's blinded elements, each checked to be a valid non-identity group element.
pub struct BlindedBatch(Vec<BlindedElement<Suite>>);

impl BlindedBatch {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a request body: at most [`MAX_BATCH`] elements, every one must decode (the
/// identity is refused).
pub fn parse_blinded(blinded: &[u8]) -> Result<BlindedBatch, BlindError> {
    if blinded.is_empty() || !blinded.len().is_multiple_of(ELEMENT_LEN) {
        return Err(BlindError::Length(blinded.len()));
    }
    let count = blinded.len() / ELEMENT_LEN;
    if count > MAX_BATCH {
        return Err(BlindError::TooMany(count));
    }
    blinded
        .chunks_exact(ELEMENT_LEN)
        .enumerate()
        .map(|(index, bytes)| {
            BlindedElement::<Suite>::deserialize(bytes)
                .map_err(|_| BlindError::BadElement { index })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(BlindedBatch)
}

/// Blinds `input` with a fresh random scalar; returns the client state (the blind, zeroed
/// on drop) and the element to send.
fn blind(input: &[u8]) -> Result<(VoprfClient<Suite>, [u8; ELEMENT_LEN]), TokenError> {
    let result = VoprfClient::<Suite>::blind(input, &mut rand::rngs::OsRng)
        .map_err(|_| TokenError::BadAnswer("an identifier is too long to tokenise".into()))?;
    let mut element = [0u8; ELEMENT_LEN];
    element.copy_from_slice(&result.message.serialize());
    Ok((result.state, element))
}

/// Checks an answer's proof against `public` and finalises every element into its 64-byte
/// output. Any failure refuses the whole batch.
// `Vec`s, not slices: voprf's batch API wants sized collections.
#[allow(clippy::ptr_arg)]
fn finalize_batch(
    states: &Vec<VoprfClient<Suite>>,
    inputs: &Vec<&[u8]>,
    answer: &[u8],
    public: &AuthorityPublicKey,
) -> Result<Vec<Zeroizing<Vec<u8>>>, TokenError> {
    let expected = PROOF_LEN + states.len() * ELEMENT_LEN;
    if answer.len() != expected {
        return Err(TokenError::BadAnswer(format!(
            "{} bytes answered for {} blinded elements ({expected} expected)",
            answer.len(),
            states.len()
        )));
    }
    let (proof, elements) = answer.split_at(PROOF_LEN);
    let proof = Proof::<Suite>::deserialize(proof)
        .map_err(|_| TokenError::BadAnswer("the batch proof is malformed".into()))?;
    let elements = elements
        .chunks_exact(ELEMENT_LEN)
        .map(EvaluationElement::<Suite>::deserialize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            TokenError::BadAnswer("an evaluated element is not a valid ristretto255 element".into())
        })?;
    let outputs = VoprfClient::batch_finalize(inputs, states, &elements, &proof, public.elem)
        .map_err(|_| {
            TokenError::BadAnswer(format!(
                "the batch's proof does not verify against the pinned authority key {}: the answer was not evaluated under that key (a swapped key or a man in the middle); nothing was sealed",
                public.key_id()
            ))
        })?;
    outputs
        .map(|o| {
            o.map(|o| Zeroizing::new(o.to_vec()))
                .map_err(|_| TokenError::BadAnswer("an evaluated element does not finalise".into()))
        })
        .collect()
}

/// What a token authority says about itself.
#[derive(Debug, Clone)]
pub struct AuthorityInfo {
    /// The key it evaluates under.
    pub public_key: AuthorityPublicKey,
    /// Most elements it evaluates in one request.
    pub max_batch: usize,
}

/// How blinded elements reach a token authority. `blindwatch-tokens` implements it over
/// HTTP; tests implement it in memory. A transport only ever carries blinded elements.
pub trait BlindTransport: Send + Sync {
    /// The authority's public key and batch limit.
    fn info(&self) -> Result<AuthorityInfo, TokenError>;
    /// Evaluates concatenated 32-byte blinded elements; the answer is the batch's proof
    /// ([`PROOF_LEN`] bytes) followed by the evaluated elements.
    fn evaluate(&self, blinded: &[u8]) -> Result<Vec<u8>, TokenError>;
}

/// Evaluates in process with the key itself (tests, benchmarks).
impl BlindTransport for AuthorityKey {
    fn info(&self) -> Result<AuthorityInfo, TokenError> {
        Ok(AuthorityInfo {
            public_key: self.public.clone(),
            max_batch: MAX_BATCH,
        })
    }
    fn evaluate(&self, blinded: &[u8]) -> Result<Vec<u8>, TokenError> {
        self.evaluate_blinded(blinded)
            .map_err(|e| TokenError::Refused(e.to_string()))
    }
}

/// Where a partner keeps its encrypted token cache, and the key it is sealed under.
pub struct CacheLocation {
    /// The directory (the partner's own, e.g. its keys directory).
    pub dir: PathBuf,
    /// The partner-held cache key file; created (0600) when missing.
    pub key_file: PathBuf,
}

/// The partner's blind tokenizer: VOPRF client, parallel batches, persistent cache.
pub struct BlindTokenizer {
    transport: Arc<dyn BlindTransport>,
    public: AuthorityPublicKey,
    cache: Mutex<TokenCache>,
    max_batch: usize,
    request_elements: usize,
    in_flight: usize,
    requested: AtomicUsize,
}

impl BlindTokenizer {
    /// Asks the authority for its key, refuses it unless it is `pinned` (the key the partner
    /// trusts), and opens the cache for that key (tokens of another key are in another file
    /// and never mix with these). Requests carry at most what the authority allows.
    pub fn connect(
        transport: Arc<dyn BlindTransport>,
        pinned: &AuthorityPublicKey,
        cache: Option<&CacheLocation>,
    ) -> Result<BlindTokenizer, TokenError> {
        let info = transport.info()?;
        if &info.public_key != pinned {
            return Err(TokenError::BadAnswer(format!(
                "the token authority serves key {}, but this partner trusts key {}: nothing was sent. If the authority's operator announced a new key, pin it (--authority-key FILE); otherwise something between you and the authority is impersonating it",
                info.public_key.key_id(),
                pinned.key_id()
            )));
        }
        let key_id = pinned.key_id().clone();
        let cache = match cache {
            Some(loc) => TokenCache::open(&loc.dir, &loc.key_file, &key_id)?,
            None => TokenCache::in_memory(&key_id)?,
        };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let max_batch = info.max_batch.clamp(1, MAX_BATCH);
        Ok(BlindTokenizer {
            transport,
            public: pinned.clone(),
            cache: Mutex::new(cache),
            max_batch,
            request_elements: DEFAULT_REQUEST_ELEMENTS.min(max_batch),
            in_flight: (2 * cores).max(2),
            requested: AtomicUsize::new(0),
        })
    }

    /// Elements per request (default 2048, never more than the authority allows).
    pub fn with_request_elements(mut self, n: usize) -> Self {
        self.request_elements = n.clamp(1, self.max_batch);
        self
    }

    /// Elements per request this tokenizer sends.
    pub fn request_elements(&self) -> usize {
        self.request_elements
    }

    /// Requests in flight at once (default twice the cores: while one batch travels or is
    /// evaluated, another is being blinded or finalised).
    pub fn with_in_flight(mut self, n: usize) -> Self {
        self.in_flight = n.max(1);
        self
    }

    /// Blinded elements sent to the authority so far.
    pub fn requested(&self) -> usize {
        self.requested.load(Ordering::Relaxed)
    }

    /// Distinct values held in the cache.
    pub fn cached(&self) -> usize {
        self.lock_cache().len()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tokenises inputs that are not in the cache: chunks of `request_elements`, up to
    /// `in_flight` at once. Each answered chunk goes into the cache at once; on a failure
    /// the cache is saved (so a retry asks only for the rest) and the call fails.
    fn fetch(&self, missing: &[Missing]) -> Result<Vec<Token>, TokenError> {
        let chunks: Vec<&[Missing]> = missing.chunks(self.request_elements).collect();
        let results: Vec<Mutex<Option<Vec<Token>>>> =
            chunks.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<TokenError>> = Mutex::new(None);
        let workers = self.in_flight.min(chunks.len()).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else { return };
                        match self.fetch_chunk(chunk) {
                            Ok(tokens) => {
                                let mut cache = self.lock_cache();
                                for ((lookup, _), token) in chunk.iter().zip(&tokens) {
                                    cache.insert(*lookup, *token);
                                }
                                drop(cache);
                                if let Some(slot) = results.get(i) {
                                    *slot.lock().unwrap_or_else(PoisonError::into_inner) =
                                        Some(tokens);
                                }
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                let mut first =
                                    first_error.lock().unwrap_or_else(PoisonError::into_inner);
                                if first.is_none() {
                                    *first = Some(e);
                                }
                                return;
                            }
                        }
                    }
                });
            }
        });
        if let Some(e) = first_error
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            // The tokens already paid for are kept: a retry asks only for the rest.
            if let Err(save) = self.lock_cache().save() {
                tracing::warn!(error = %save, "the token cache could not be saved after a failed request");
            }
            return Err(e);
        }
        let mut out = Vec::with_capacity(missing.len());
        for slot in results {
            match slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
                Some(tokens) => out.extend(tokens),
                None => return Err(TokenError::BadAnswer("a batch was not evaluated".into())),
            }
        }
        Ok(out)
    }

    fn fetch_chunk(&self, chunk: &[Missing]) -> Result<Vec<Token>, TokenError> {
        let mut states = Vec::with_capacity(chunk.len());
        let mut request = Vec::with_capacity(chunk.len() * ELEMENT_LEN);
        for (_, input) in chunk {
            let (state, element) = blind(input)?;
            states.push(state);
            request.extend_from_slice(&element);
        }
        self.requested.fetch_add(chunk.len(), Ordering::Relaxed);
        let answer = self.transport.evaluate(&request)?;
        let inputs: Vec<&[u8]> = chunk.iter().map(|(_, input)| input.as_slice()).collect();
        let outputs = finalize_batch(&states, &inputs, &answer, &self.public)?;
        Ok(outputs
            .iter()
            .map(|o| Token::from_prf_output(o.as_ref()))
            .collect())
    }
}

/// Tokens paid for are kept whatever stops the run (the sealer flushes on success; this
/// covers every other way out).
impl Drop for BlindTokenizer {
    fn drop(&mut self) {
        if let Err(e) = self.lock_cache().save() {
            tracing::warn!(error = %e, "the token cache could not be saved");
        }
    }
}

impl Tokenizer for BlindTokenizer {
    fn mode(&self) -> TokenMode {
        TokenMode::Blind
    }
    fn key_id(&self) -> &KeyId {
        self.public.key_id()
    }
    fn tokenize(&self, inputs: &[&RawIdentifier]) -> Result<Vec<Token>, TokenError> {
        let mut out: Vec<Option<Token>> = vec![None; inputs.len()];
        // Distinct inputs that the cache does not hold, and where their tokens go.
        let mut missing: Vec<Missing> = Vec::new();
        let mut wanted: HashMap<[u8; 16], Vec<usize>> = HashMap::new();
        {
            let cache = self.lock_cache();
            for (i, raw) in inputs.iter().enumerate() {
                let input = raw.tokenizer_input();
                let lookup = cache.lookup_key(&input);
                if let Some(token) = cache.get(&lookup) {
                    out[i] = Some(token);
                    continue;
                }
                let slots = wanted.entry(lookup).or_default();
                if slots.is_empty() {
                    missing.push((lookup, input));
                }
                slots.push(i);
            }
        }
        if !missing.is_empty() {
            let tokens = self.fetch(&missing)?;
            for ((lookup, _), token) in missing.iter().zip(tokens) {
                for &i in wanted.get(lookup).map(Vec::as_slice).unwrap_or(&[]) {
                    out[i] = Some(token);
                }
            }
        }
        out.into_iter()
            .map(|t| t.ok_or_else(|| TokenError::BadAnswer("a value got no token".into())))
            .collect()
    }
    fn flush(&self) -> Result<(), TokenError> {
        self.lock_cache().save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_common::{IdentifierKind, normalise};

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9497 appendix A.1.2: VOPRF mode, ristretto255-SHA512, the batch-of-two vector,
    /// through this module's key, evaluation, proof check and finalisation.
    #[test]
    fn rfc9497_voprf_ristretto255_sha512_vectors() {
        let seed = [0xa3u8; 32];
        let key = AuthorityKey::derive(&seed, &unhex("74657374206b6579")).unwrap();
        assert_eq!(
            hex::encode(&key.server.serialize()[..32]),
            "e6f73f344b79b379f1a0dd37e07ff62e38d9f71345ce62ae3a9bc60b04ccd909"
        );
        assert_eq!(
            hex::encode(key.public_key().as_bytes()),
            "c803e2cc6b05fc15064549b5920659ca4a77b2cca6f04f6b357009335476ad4e"
        );
        let inputs = [unhex("00"), unhex("5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a")];
        let blinds = [
            "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706",
            "222a5e897cf59db8145db8d16e597e8facb80ae7d4e26d9881aa6f61d645fc0e",
        ];
        let blinded_hex = [
            "863f330cc1a1259ed5a5998a23acfd37fb4351a793a5b3c090b642ddc439b945",
            "90a0145ea9da29254c3a56be4fe185465ebb3bf2a1801f7124bbbadac751e654",
        ];
        let evaluated_hex = "aa8fa048764d5623868679402ff6108d2521884fa138cd7f9c7669a9a014267ecc5ac221950a49ceaa73c8db41b82c20372a4c8d63e5dded2db920b7eee36a2a";
        let proof_hex = "cc203910175d786927eeb44ea847328047892ddf8590e723c37205cb74600b0a5ab5337c8eb4ceae0494c2cf89529dcf94572ed267473d567aeed6ab873dee08";
        let outputs_hex = [
            "b58cfbe118e0cb94d79b5fd6a6dafb98764dff49c14e1770b566e42402da1a7da4d8527693914139caee5bd03903af43a491351d23b430948dd50cde10d32b3c",
            "8a9a2f3c7f085b65933594309041fc1898d42d0858e59f90814ae90571a6df60356f4610bf816f27afdd84f47719e480906d27ecd994985890e5f539e7ea74b6",
        ];
        let mut states = Vec::new();
        let mut blinded = Vec::new();
        for ((input, b), expected) in inputs.iter().zip(blinds).zip(blinded_hex) {
            let b = <Suite as Group>::deserialize_scalar(&unhex(b)).unwrap();
            let r = VoprfClient::<Suite>::deterministic_blind_unchecked(input, b).unwrap();
            assert_eq!(hex::encode(r.message.serialize()), expected);
            blinded.extend_from_slice(&r.message.serialize());
            states.push(r.state);
        }
        // Our evaluation gives the vector's elements, with a proof of its own (fresh
        // randomness) that verifies; the vector's own proof verifies too.
        let ours = key.evaluate_blinded(&blinded).unwrap();
        assert_eq!(hex::encode(&ours[PROOF_LEN..]), evaluated_hex);
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut theirs = unhex(proof_hex);
        theirs.extend_from_slice(&unhex(evaluated_hex));
        for answer in [ours, theirs] {
            let outputs = finalize_batch(&states, &refs, &answer, key.public_key()).unwrap();
            for (o, expected) in outputs.iter().zip(outputs_hex) {
                assert_eq!(hex::encode(o.as_slice()), expected);
            }
        }
        for (input, expected) in inputs.iter().zip(outputs_hex) {
            assert_eq!(hex::encode(key.prf(input).unwrap().as_slice()), expected);
        }
    }

    #[test]
    fn answers_under_another_key_or_altered_fail_the_proof() {
        let key = AuthorityKey::generate().unwrap();
        let other = AuthorityKey::generate().unwrap();
        let inputs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![b'p', 0x1f, b'0' + i]).collect();
        let mut states = Vec::new();
        let mut request = Vec::new();
        for input in &inputs {
            let (state, element) = blind(input).unwrap();
            states.push(state);
            request.extend_from_slice(&element);
        }
        let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let good = key.evaluate_blinded(&request).unwrap();
        assert!(finalize_batch(&states, &refs, &good, key.public_key()).is_ok());
        // Evaluated under another key: refused against the pinned key.
        let swapped = other.evaluate_blinded(&request).unwrap();
        let err = finalize_batch(&states, &refs, &swapped, key.public_key()).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");
        // The right proof with one element swapped for another answer's, or reordered.
        let mut mixed = good.clone();
        mixed[PROOF_LEN..PROOF_LEN + ELEMENT_LEN]
            .copy_from_slice(&swapped[PROOF_LEN..PROOF_LEN + ELEMENT_LEN]);
        let mut reordered = good.clone();
        let (a, b) = (PROOF_LEN, PROOF_LEN + ELEMENT_LEN);
        let first: Vec<u8> = reordered[a..b].to_vec();
        let second: Vec<u8> = reordered[b..b + ELEMENT_LEN].to_vec();
        reordered[a..b].copy_from_slice(&second);
        reordered[b..b + ELEMENT_LEN].copy_from_slice(&first);
        // The blinded elements echoed back (a key of 1) with some proof.
        let mut echo = good[..PROOF_LEN].to_vec();
        echo.extend_from_slice(&request);
        for bad in [mixed, reordered, echo] {
            assert!(finalize_batch(&states, &refs, &bad, key.public_key()).is_err());
        }
        assert!(finalize_batch(&states, &refs, &good[..good.len() - 1], key.public_key()).is_err());
    }

    #[test]
    fn blind_tokens_match_direct_evaluation_and_are_kind_bound() {
        let key = Arc::new(AuthorityKey::generate().unwrap());
        let tokenizer = BlindTokenizer::connect(key.clone(), key.public_key(), None)
            .unwrap()
            .with_request_elements(3);
        let ids: Vec<RawIdentifier> = [
            (IdentifierKind::Person, "11010519491231002X"),
            (IdentifierKind::Phone, "13812345678"),
            (IdentifierKind::Name, "东城"),
            (IdentifierKind::Address, "东城"),
            (IdentifierKind::Person, "110105491231002"),
        ]
        .into_iter()
        .map(|(k, v)| normalise(k, v).unwrap())
        .collect();
        let refs: Vec<&RawIdentifier> = ids.iter().collect();
        let tokens = tokenizer.tokenize(&refs).unwrap();
        for (id, token) in ids.iter().zip(&tokens) {
            assert_eq!(key.token_of(id).unwrap(), *token);
        }
        assert_ne!(tokens[2], tokens[3], "kind is bound into the input");
        assert_eq!(tokens[0], tokens[4], "same normalised value, same token");
        // Four distinct values were sent once each; a second call is served by the cache.
        assert_eq!(tokenizer.requested(), 4);
        assert_eq!(tokenizer.tokenize(&refs).unwrap(), tokens);
        assert_eq!(tokenizer.requested(), 4);
        assert_eq!(tokenizer.mode(), TokenMode::Blind);
        assert_eq!(Tokenizer::key_id(&tokenizer), key.key_id());
        // A tokenizer that pins another key refuses this authority before sending anything.
        let other = AuthorityKey::generate().unwrap();
        let err = BlindTokenizer::connect(key.clone(), other.public_key(), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("trusts key"), "{err}");
    }

    #[test]
    fn key_rotation_changes_key_id_and_tokens() {
        let old = AuthorityKey::generate().unwrap();
        let new = AuthorityKey::generate().unwrap();
        assert_ne!(old.key_id(), new.key_id());
        let id = normalise(IdentifierKind::Person, "11010519491231002X").unwrap();
        assert_ne!(old.token_of(&id).unwrap(), new.token_of(&id).unwrap());
    }

    #[test]
    fn key_files_round_trip_and_bad_batches_are_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authority.key");
        let key = AuthorityKey::generate().unwrap();
        key.write(&path).unwrap();
        let again = AuthorityKey::read(&path).unwrap();
        assert_eq!(again.key_id(), key.key_id());
        let public = dir.path().join("authority.pub");
        key.public_key().write(&public).unwrap();
        assert_eq!(
            &AuthorityPublicKey::read(&public).unwrap(),
            key.public_key()
        );
        // The key id is the public key's: it names the key, and nothing else does.
        assert_eq!(
            key.key_id(),
            AuthorityPublicKey::from_bytes(key.public_key().as_bytes())
                .unwrap()
                .key_id()
        );
        assert!(AuthorityPublicKey::from_bytes(&[0u8; 32]).is_err());
        assert!(matches!(
            key.evaluate_blinded(&[0u8; 31]),
            Err(BlindError::Length(31))
        ));
        // The identity (all zeros) and a non-canonical encoding are refused.
        let (_, good) = blind(b"person\x1f1").unwrap();
        let mut batch = good.to_vec();
        batch.extend_from_slice(&[0u8; 32]);
        assert!(matches!(
            key.evaluate_blinded(&batch),
            Err(BlindError::BadElement { index: 1 })
        ));
        assert!(matches!(
            key.evaluate_blinded(&[0xffu8; 32]),
            Err(BlindError::BadElement { index: 0 })
        ));
        let too_many = good.repeat(MAX_BATCH + 1);
        assert!(matches!(
            key.evaluate_blinded(&too_many),
            Err(BlindError::TooMany(n)) if n == MAX_BATCH + 1
        ));
    }
}
