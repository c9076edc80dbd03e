//! How partners authenticate to the token authority: each request is signed with the
//! partner's existing Ed25519 signing key (the one that signs its manifests).
//!
//! Why signatures rather than bearer credentials: the authority then holds no partner
//! secret at all (only public keys, nothing to steal or leak from its disk), a partner has
//! no second secret to manage, a captured request cannot be altered (the signature covers
//! the body's SHA-256) or replayed (a timestamp window and a nonce book), and plain HTTP
//! carries nothing that would let an eavesdropper act as the partner. The body holds only
//! blinded elements, which are uniformly random group elements and reveal nothing.
//!
//! Signed message (UTF-8, `\n`-separated, trailing newline):
//! `blindwatch-token-request-v1`, `POST /v1/evaluate`, partner, unix time, nonce (32 hex),
//! hex SHA-256 of the body.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_crypto::sign::SigningKey;

pub const HEADER_PARTNER: &str = "x-blindwatch-partner";
pub const HEADER_TIME: &str = "x-blindwatch-time";
pub const HEADER_NONCE: &str = "x-blindwatch-nonce";
pub const HEADER_SIGNATURE: &str = "x-blindwatch-signature";
/// The key id of the key that evaluated a batch, on every evaluation answer.
pub const HEADER_KEY_ID: &str = "x-blindwatch-key-id";

pub const EVALUATE_PATH: &str = "/v1/evaluate";
pub const KEY_PATH: &str = "/v1/key";

/// How far a request's time may be from the authority's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

pub fn signed_message(partner: &str, time: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "blindwatch-token-request-v1\nPOST {EVALUATE_PATH}\n{partner}\n{time}\n{nonce}\n{}\n",
        blindwatch_crypto::sha256_hex(body)
    )
    .into_bytes()
}

/// The four authentication headers of a request.
pub struct SignedHeaders {
    pub partner: String,
    pub time: String,
    pub nonce: String,
    pub signature: String,
}

pub fn sign_request(
    partner: &str,
    key: &SigningKey,
    body: &[u8],
) -> Result<SignedHeaders, blindwatch_crypto::keys::KeyError> {
    let time = chrono::Utc::now().timestamp();
    let nonce = hex::encode(blindwatch_crypto::random_secret::<16>()?.as_ref());
    let signature = B64.encode(key.sign(&signed_message(partner, time, &nonce, body)));
    Ok(SignedHeaders {
        partner: partner.to_owned(),
        time: time.to_string(),
        nonce,
        signature,
    })
}

/// Nonces seen within the clock window; a nonce seen twice is a replay.
#[derive(Default)]
pub(crate) struct NonceBook {
    seen: HashMap<(String, String), i64>,
}

/// More remembered nonces than this and new requests are refused until old ones expire
/// (at a few thousand elements per request this is far above any honest rate).
const MAX_NONCES: usize = 1_000_000;

impl NonceBook {
    /// Records a nonce; false if it was seen before (or the book is full).
    pub fn record(&mut self, partner: &str, nonce: &str, time: i64, now: i64) -> bool {
        if self.seen.len() >= MAX_NONCES / 2 {
            self.seen
                .retain(|_, t| (now - *t).abs() <= MAX_CLOCK_SKEW_SECS);
        }
        if self.seen.len() >= MAX_NONCES {
            return false;
        }
        self.seen
            .insert((partner.to_owned(), nonce.to_owned()), time)
            .is_none()
    }
}
