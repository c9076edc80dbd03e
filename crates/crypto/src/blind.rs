//! Blind tokens: RFC 9497 OPRF in OPRF mode (not VOPRF or POPRF) with the
//! ristretto255-SHA512 suite, through the `voprf` crate.
//!
//! - [`AuthorityKey`] is the token authority's private key. The authority evaluates
//!   *blinded* elements ([`AuthorityKey::evaluate_blinded`]) and never sees an identifier.
//! - [`BlindTokenizer`] is the partner's side of the protocol and a [`Tokenizer`]: for every
//!   identifier it has not tokenised before it hashes `kind ‖ 0x1f ‖ value` to the group,
//!   multiplies by a fresh random blind, sends only the blinded element through a
//!   [`BlindTransport`] (the HTTP client lives in `blindwatch-tokens`), unblinds the
//!   answer and finalises it; the token is the first 16 bytes of the 64-byte OPRF output.
//!   Tokens it has made are kept in an encrypted [`TokenCache`], so a later seal asks only
//!   for values it has not seen.
//!
//! Only the key holder can compute a token, and the holder learns nothing of the inputs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use blindwatch_common::RawIdentifier;
use voprf::{BlindedElement, EvaluationElement, Group, OprfClient, OprfServer, Ristretto255};
use zeroize::Zeroizing;

use crate::keys::{self, KeyError, KeyFileKind, KeyId};
use crate::token::{Token, TokenError, TokenMode, Tokenizer};
use crate::token_cache::TokenCache;

/// The RFC 9497 suite identifier.
pub const OPRF_SUITE: &str = "ristretto255-SHA512";
/// The RFC 9497 mode: plain OPRF (mode 0x00).
pub const OPRF_MODE: &str = "oprf";
/// Bytes of one serialised group element (blinded or evaluated).
pub const ELEMENT_LEN: usize = 32;

type Suite = Ristretto255;

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
    #[error("the OPRF input is empty or longer than 65535 bytes")]
    Input,
}

/// The token authority's OPRF private key. Only the authority holds it; the platform
/// never does. The scalar is zeroed when dropped (voprf's `OprfServer` is `ZeroizeOnDrop`).
pub struct AuthorityKey {
    server: OprfServer<Suite>,
    key_id: KeyId,
}

impl AuthorityKey {
    /// A fresh random key.
    pub fn generate() -> Result<AuthorityKey, KeyError> {
        let server =
            OprfServer::<Suite>::new(&mut rand::rngs::OsRng).map_err(|_| KeyError::Random)?;
        AuthorityKey::from_server(server).map_err(|_| KeyError::Random)
    }

    /// A key from its 32-byte scalar encoding.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<AuthorityKey, BlindError> {
        let server = OprfServer::<Suite>::new_with_key(bytes).map_err(|_| BlindError::BadKey)?;
        AuthorityKey::from_server(server)
    }

    /// RFC 9497 `DeriveKeyPair(seed, info)` (used by the test vectors).
    pub fn derive(seed: &[u8], info: &[u8]) -> Result<AuthorityKey, BlindError> {
        let server =
            OprfServer::<Suite>::new_from_seed(seed, info).map_err(|_| BlindError::BadKey)?;
        AuthorityKey::from_server(server)
    }

    fn from_server(server: OprfServer<Suite>) -> Result<AuthorityKey, BlindError> {
        let secret = Zeroizing::new(server.serialize().to_vec());
        // The public key sk·G names the key; it reveals nothing of the scalar.
        let scalar =
            <Suite as Group>::deserialize_scalar(&secret).map_err(|_| BlindError::BadKey)?;
        let public = <Suite as Group>::serialize_elem(<Suite as Group>::base_elem() * scalar);
        let key_id = KeyId::derive("oprf-ristretto255-sha512", &public);
        Ok(AuthorityKey { server, key_id })
    }

    pub fn read(path: &Path) -> Result<AuthorityKey, KeyError> {
        let bytes = keys::read_fixed::<32>(path, KeyFileKind::TokenAuthority)?;
        AuthorityKey::from_secret_bytes(bytes.as_ref()).map_err(|_| KeyError::Malformed {
            path: path.to_owned(),
            why: "not a ristretto255 OPRF key",
        })
    }

    /// Writes the key file (0600, refuses to overwrite).
    pub fn write(&self, path: &Path) -> Result<(), KeyError> {
        let secret = Zeroizing::new(self.server.serialize().to_vec());
        keys::write_key_file(path, KeyFileKind::TokenAuthority, &secret)
    }

    /// The public name of this key, recorded in every blind package's manifest.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// Evaluates a batch of blinded elements, given as concatenated 32-byte encodings, and
    /// returns the evaluated elements in the same order. The whole batch is refused if any
    /// element is malformed: nothing is evaluated then.
    pub fn evaluate_blinded(&self, blinded: &[u8]) -> Result<Vec<u8>, BlindError> {
        Ok(self.evaluate_batch(&parse_blinded(blinded)?))
    }

    /// Evaluates a batch that [`parse_blinded`] accepted.
    pub fn evaluate_batch(&self, batch: &BlindedBatch) -> Vec<u8> {
        let mut out = Vec::with_capacity(batch.0.len() * ELEMENT_LEN);
        for element in &batch.0 {
            out.extend_from_slice(&self.server.blind_evaluate(element).serialize());
        }
        out
    }

    /// The token of `raw` computed directly with the key (what a blind evaluation yields).
    /// Only the key holder can do this; it exists for tests and checks.
    pub fn token_of(&self, raw: &RawIdentifier) -> Result<Token, BlindError> {
        let output = self.prf(&raw.tokenizer_input())?;
        Ok(Token::from_prf_output(output.as_ref()))
    }

    /// The full 64-byte OPRF output for `input` (RFC 9497 `Evaluate`).
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

/// Parses a request body: every element must decode (the identity is refused).
pub fn parse_blinded(blinded: &[u8]) -> Result<BlindedBatch, BlindError> {
    if blinded.is_empty() || !blinded.len().is_multiple_of(ELEMENT_LEN) {
        return Err(BlindError::Length(blinded.len()));
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

/// The client state of one blinded input: the blind scalar (zeroed on drop).
pub(crate) struct Blinded {
    state: OprfClient<Suite>,
}

/// Blinds `input` with a fresh random scalar; returns the state and the element to send.
pub(crate) fn blind(input: &[u8]) -> Result<(Blinded, [u8; ELEMENT_LEN]), TokenError> {
    let result = OprfClient::<Suite>::blind(input, &mut rand::rngs::OsRng)
        .map_err(|_| TokenError::BadAnswer("an identifier is too long to tokenise".into()))?;
    Ok((
        Blinded {
            state: result.state,
        },
        element_bytes(&result.message.serialize()),
    ))
}

/// Unblinds and finalises one evaluated element into the 64-byte OPRF output.
pub(crate) fn finalize(
    blinded: &Blinded,
    input: &[u8],
    evaluated: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let element = EvaluationElement::<Suite>::deserialize(evaluated).map_err(|_| {
        TokenError::BadAnswer("an evaluated element is not a valid ristretto255 element".into())
    })?;
    blinded
        .state
        .finalize(input, &element)
        .map(|o| Zeroizing::new(o.to_vec()))
        .map_err(|_| TokenError::BadAnswer("the evaluated element does not finalise".into()))
}

fn element_bytes(slice: &[u8]) -> [u8; ELEMENT_LEN] {
    let mut out = [0u8; ELEMENT_LEN];
    out.copy_from_slice(&slice[..ELEMENT_LEN]);
    out
}

/// What a token authority answered to one batch.
pub struct Evaluation {
    /// The key that evaluated the batch (must not change during a seal).
    pub key_id: KeyId,
    /// Evaluated elements, concatenated, in request order.
    pub elements: Vec<u8>,
}

/// How blinded elements reach a token authority. `blindwatch-tokens` implements it over
/// HTTP; tests implement it in memory. A transport only ever carries blinded elements.
pub trait BlindTransport: Send + Sync {
    /// The authority's current key id.
    fn key_id(&self) -> Result<KeyId, TokenError>;
    /// Evaluates concatenated 32-byte blinded elements.
    fn evaluate(&self, blinded: &[u8]) -> Result<Evaluation, TokenError>;
}

/// Evaluates in process with the key itself (tests, benchmarks, and a local authority).
impl BlindTransport for AuthorityKey {
    fn key_id(&self) -> Result<KeyId, TokenError> {
        Ok(self.key_id.clone())
    }
    fn evaluate(&self, blinded: &[u8]) -> Result<Evaluation, TokenError> {
        let elements = self
            .evaluate_blinded(blinded)
            .map_err(|e| TokenError::Refused(e.to_string()))?;
        Ok(Evaluation {
            key_id: self.key_id.clone(),
            elements,
        })
    }
}

/// Where a partner keeps its encrypted token cache, and the key it is sealed under.
pub struct CacheLocation {
    /// The directory (the partner's own, e.g. its keys directory).
    pub dir: PathBuf,
    /// The partner-held cache key file; created (0600) when missing.
    pub key_file: PathBuf,
}

/// The partner's blind tokenizer: OPRF client, parallel batches, persistent cache.
pub struct BlindTokenizer {
    transport: Arc<dyn BlindTransport>,
    key_id: KeyId,
    cache: Mutex<TokenCache>,
    request_elements: usize,
    in_flight: usize,
    requested: AtomicUsize,
}

impl BlindTokenizer {
    /// Asks the authority for its key id and opens the cache for that key (tokens of an
    /// older key are in another file and never mix with these).
    pub fn connect(
        transport: Arc<dyn BlindTransport>,
        cache: Option<&CacheLocation>,
    ) -> Result<BlindTokenizer, TokenError> {
        let key_id = transport.key_id()?;
        let cache = match cache {
            Some(loc) => TokenCache::open(&loc.dir, &loc.key_file, &key_id)?,
            None => TokenCache::in_memory(&key_id)?,
        };
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Ok(BlindTokenizer {
            transport,
            key_id,
            cache: Mutex::new(cache),
            request_elements: 2048,
            in_flight: (2 * cores).max(2),
            requested: AtomicUsize::new(0),
        })
    }

    /// Elements per request (default 2048).
    pub fn with_request_elements(mut self, n: usize) -> Self {
        self.request_elements = n.max(1);
        self
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
    /// `in_flight` at once. Any failure fails the whole call.
    fn fetch(&self, inputs: &[Zeroizing<Vec<u8>>]) -> Result<Vec<Token>, TokenError> {
        let chunks: Vec<&[Zeroizing<Vec<u8>>]> = inputs.chunks(self.request_elements).collect();
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
            return Err(e);
        }
        let mut out = Vec::with_capacity(inputs.len());
        for slot in results {
            match slot.into_inner().unwrap_or_else(PoisonError::into_inner) {
                Some(tokens) => out.extend(tokens),
                None => return Err(TokenError::BadAnswer("a batch was not evaluated".into())),
            }
        }
        Ok(out)
    }

    fn fetch_chunk(&self, chunk: &[Zeroizing<Vec<u8>>]) -> Result<Vec<Token>, TokenError> {
        let mut states = Vec::with_capacity(chunk.len());
        let mut request = Vec::with_capacity(chunk.len() * ELEMENT_LEN);
        for input in chunk {
            let (state, element) = blind(input)?;
            states.push(state);
            request.extend_from_slice(&element);
        }
        self.requested.fetch_add(chunk.len(), Ordering::Relaxed);
        let answer = self.transport.evaluate(&request)?;
        if answer.key_id != self.key_id {
            return Err(TokenError::BadAnswer(format!(
                "the authority's key changed during the seal (from {} to {}); seal again to use the new key",
                self.key_id, answer.key_id
            )));
        }
        if answer.elements.len() != request.len() {
            return Err(TokenError::BadAnswer(format!(
                "{} bytes of evaluated elements for {} blinded elements",
                answer.elements.len(),
                chunk.len()
            )));
        }
        states
            .iter()
            .zip(chunk)
            .zip(answer.elements.chunks_exact(ELEMENT_LEN))
            .map(|((state, input), evaluated)| {
                finalize(state, input, evaluated).map(|o| Token::from_prf_output(o.as_ref()))
            })
            .collect()
    }
}

impl Tokenizer for BlindTokenizer {
    fn mode(&self) -> TokenMode {
        TokenMode::Blind
    }
    fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    fn tokenize(&self, inputs: &[&RawIdentifier]) -> Result<Vec<Token>, TokenError> {
        let mut out: Vec<Option<Token>> = vec![None; inputs.len()];
        // Distinct inputs that the cache does not hold, and where their tokens go.
        let mut missing: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut missing_lookup = Vec::new();
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
                    missing.push(input);
                    missing_lookup.push(lookup);
                }
                slots.push(i);
            }
        }
        if !missing.is_empty() {
            let tokens = self.fetch(&missing)?;
            let mut cache = self.lock_cache();
            for (lookup, token) in missing_lookup.iter().zip(tokens) {
                cache.insert(*lookup, token);
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

    /// RFC 9497 appendix A.1.1: OPRF mode, ristretto255-SHA512, both test vectors, through
    /// this module's key, evaluation and finalisation.
    #[test]
    fn rfc9497_oprf_ristretto255_sha512_vectors() {
        let seed = [0xa3u8; 32];
        let key = AuthorityKey::derive(&seed, &unhex("74657374206b6579")).unwrap();
        assert_eq!(
            hex::encode(key.server.serialize()),
            "5ebcea5ee37023ccb9fc2d2019f9d7737be85591ae8652ffa9ef0f4d37063b0e"
        );
        let blind_hex = "64d37aed22a27f5191de1c1d69fadb899d8862b58eb4220029e036ec4c1f6706";
        let vectors = [
            (
                "00",
                "609a0ae68c15a3cf6903766461307e5c8bb2f95e7e6550e1ffa2dc99e412803c",
                "7ec6578ae5120958eb2db1745758ff379e77cb64fe77b0b2d8cc917ea0869c7e",
                "527759c3d9366f277d8c6020418d96bb393ba2afb20ff90df23fb7708264e2f3ab9135e3bd69955851de4b1f9fe8a0973396719b7912ba9ee8aa7d0b5e24bcf6",
            ),
            (
                "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
                "da27ef466870f5f15296299850aa088629945a17d1f5b7f5ff043f76b3c06418",
                "b4cbf5a4f1eeda5a63ce7b77c7d23f461db3fcab0dd28e4e17cecb5c90d02c25",
                "f4a74c9c592497375e796aa837e907b1a045d34306a749db9f34221f7e750cb4f2a6413a6bf6fa5e19ba6348eb673934a722a7ede2e7621306d18951e7cf2c73",
            ),
        ];
        for (input, blinded_hex, evaluated_hex, output_hex) in vectors {
            let input = unhex(input);
            let blind = <Suite as Group>::deserialize_scalar(&unhex(blind_hex)).unwrap();
            let result = OprfClient::<Suite>::deterministic_blind_unchecked(&input, blind).unwrap();
            let blinded = result.message.serialize();
            assert_eq!(hex::encode(blinded), blinded_hex);
            let evaluated = key.evaluate_blinded(&blinded).unwrap();
            assert_eq!(hex::encode(&evaluated), evaluated_hex);
            let state = Blinded {
                state: result.state,
            };
            let output = finalize(&state, &input, &evaluated).unwrap();
            assert_eq!(hex::encode(output.as_slice()), output_hex);
            // The direct evaluation with the key agrees with the blind protocol.
            assert_eq!(hex::encode(key.prf(&input).unwrap().as_slice()), output_hex);
        }
    }

    #[test]
    fn blind_tokens_match_direct_evaluation_and_are_kind_bound() {
        let key = Arc::new(AuthorityKey::generate().unwrap());
        let tokenizer = BlindTokenizer::connect(key.clone(), None)
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
    }
}
