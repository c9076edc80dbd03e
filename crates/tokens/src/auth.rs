//! How partners authenticate to the token authority: each request is signed with the
//! partner's existing Ed25519 signing key (the one that signs its manifests).
//!
//! Why signatures rather than bearer credentials: the authority then holds no partner
//! secret at all (only public keys, nothing to steal or leak from its disk), a partner has
//! no second secret to manage, and a captured request can neither be altered (the signature
//! covers the body's SHA-256) nor replayed: not later (a time window), not twice (accepted
//! nonces are kept, and recovered from the audit log after a restart), and not at another
//! authority or route (the signed text names the authority's key id and the path).
//!
//! Signed message (UTF-8, `\n`-separated, trailing newline):
//! `blindwatch-token-request-v2`, `POST /v1/evaluate`, the authority's key id, partner,
//! unix time, nonce (32 lowercase hex), hex SHA-256 of the body.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_audit::Sha256Digest;
use blindwatch_crypto::KeyId;
use blindwatch_crypto::sign::SigningKey;

pub const HEADER_PARTNER: &str = "x-blindwatch-partner";
pub const HEADER_TIME: &str = "x-blindwatch-time";
pub const HEADER_NONCE: &str = "x-blindwatch-nonce";
pub const HEADER_SIGNATURE: &str = "x-blindwatch-signature";

pub const EVALUATE_PATH: &str = "/v1/evaluate";
pub const KEY_PATH: &str = "/v1/key";

/// How far a request's time may be from the authority's clock, seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// How long an accepted nonce is remembered, seconds after its acceptance: a request may
/// carry a time up to the skew ahead of the authority's clock and is valid until the skew
/// past that time, so twice the skew (and a margin for clock steps) covers every replay.
pub const NONCE_KEEP_SECS: i64 = 2 * MAX_CLOCK_SKEW_SECS as i64 + 60;

pub fn signed_message(
    key_id: &KeyId,
    partner: &str,
    time: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "blindwatch-token-request-v2\nPOST {EVALUATE_PATH}\n{key_id}\n{partner}\n{time}\n{nonce}\n{}\n",
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

/// Signs a request for the authority whose key is `key_id`.
pub fn sign_request(
    key_id: &KeyId,
    partner: &str,
    key: &SigningKey,
    body: &[u8],
) -> Result<SignedHeaders, blindwatch_crypto::keys::KeyError> {
    sign_request_at(key_id, partner, key, body, chrono::Utc::now().timestamp())
}

/// [`sign_request`] with a given time (tests of the window).
pub fn sign_request_at(
    key_id: &KeyId,
    partner: &str,
    key: &SigningKey,
    body: &[u8],
    time: i64,
) -> Result<SignedHeaders, blindwatch_crypto::keys::KeyError> {
    let nonce = hex::encode(blindwatch_crypto::random_secret::<16>()?.as_ref());
    let signature = B64.encode(key.sign(&signed_message(key_id, partner, time, &nonce, body)));
    Ok(SignedHeaders {
        partner: partner.to_owned(),
        time: time.to_string(),
        nonce,
        signature,
    })
}

/// A request time: unsigned decimal seconds, at most 12 digits, so nothing computed from
/// it can overflow.
pub fn parse_time(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a request time is within the window around `now` (no arithmetic that can wrap).
pub fn within_window(time: i64, now: i64) -> bool {
    time.abs_diff(now) <= MAX_CLOCK_SKEW_SECS
}

/// A nonce: exactly 32 lowercase hex digits.
pub fn valid_nonce(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// What the replay book and the audit log keep of a request: SHA-256 of
/// `partner ‖ 0x00 ‖ nonce`.
pub fn nonce_digest(partner: &str, nonce: &str) -> Sha256Digest {
    let mut input = Vec::with_capacity(partner.len() + 1 + nonce.len());
    input.extend_from_slice(partner.as_bytes());
    input.push(0);
    input.extend_from_slice(nonce.as_bytes());
    Sha256Digest::of(&input)
}

/// Nonces of accepted requests, each kept for [`NONCE_KEEP_SECS`] after its acceptance; a
/// nonce seen twice is a replay. Only accepted requests enter it (refusals leave no trace),
/// and expiry walks a queue in acceptance order, so each request costs O(1) however many
/// nonces are kept.
#[derive(Default)]
pub(crate) struct NonceBook {
    seen: HashMap<[u8; 32], i64>,
    order: VecDeque<(i64, [u8; 32])>,
}

impl NonceBook {
    fn expire(&mut self, now: i64) {
        while let Some(&(expires, digest)) = self.order.front() {
            if expires > now {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&digest) == Some(&expires) {
                self.seen.remove(&digest);
            }
        }
    }

    pub fn contains(&mut self, digest: &Sha256Digest, now: i64) -> bool {
        self.expire(now);
        self.seen.contains_key(&digest.0)
    }

    /// Records a nonce accepted at `accepted_at`; false if it is already there.
    pub fn insert(&mut self, digest: &Sha256Digest, accepted_at: i64, now: i64) -> bool {
        self.expire(now);
        if self.seen.contains_key(&digest.0) {
            return false;
        }
        let expires = accepted_at.saturating_add(NONCE_KEEP_SECS);
        if expires <= now {
            return true;
        }
        self.seen.insert(digest.0, expires);
        self.order.push_back((expires, digest.0));
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_nonces_are_range_checked_without_wrapping() {
        assert_eq!(parse_time("1764460800"), Some(1_764_460_800));
        for bad in ["", "-1", "+5", " 5", "1e9", "9223372036854775807", "0x10"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        // Extremes of i64 neither wrap nor pass.
        assert!(!within_window(i64::MIN, 1_764_460_800));
        assert!(!within_window(i64::MAX, i64::MIN));
        assert!(within_window(1000, 1000 + MAX_CLOCK_SKEW_SECS as i64));
        assert!(!within_window(1000, 1001 + MAX_CLOCK_SKEW_SECS as i64));
        assert!(valid_nonce("0123456789abcdef0123456789abcdef"));
        assert!(!valid_nonce("0123456789ABCDEF0123456789ABCDEF"));
        assert!(!valid_nonce("0123456789abcdef0123456789abcde"));
    }

    #[test]
    fn the_book_forgets_only_what_can_no_longer_be_replayed() {
        let mut book = NonceBook::default();
        let a = nonce_digest("hospital", "00000000000000000000000000000001");
        let b = nonce_digest("insurer", "00000000000000000000000000000001");
        assert!(book.insert(&a, 1000, 1000));
        assert!(!book.insert(&a, 1001, 1001), "a replay");
        assert!(
            book.insert(&b, 1001, 1001),
            "the same nonce of another partner"
        );
        assert!(book.contains(&a, 1000 + NONCE_KEEP_SECS - 1));
        assert!(!book.contains(&a, 1000 + NONCE_KEEP_SECS));
        assert_eq!(book.len(), 1);
        assert!(!book.contains(&b, 1001 + NONCE_KEEP_SECS));
        assert_eq!(book.len(), 0);
        // Extreme times saturate instead of wrapping.
        assert!(book.insert(&a, i64::MAX, 0));
        assert!(book.contains(&a, i64::MAX - 1));
    }
}
