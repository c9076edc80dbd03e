//! Request rates per caller: a token bucket for each key (an authenticated user, a
//! partner), so one caller — or a stolen key — cannot take a server from everyone else.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by caller. Only authenticated callers should get one, so the map is
/// bounded by the callers a deployment knows.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once above it.
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says in how many seconds (at least 1) one
    /// is allowed.
    pub fn take(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        // A poisoned map only means another request panicked mid-update: the buckets are
        // still numbers, keep using them.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: self.burst,
                at: now,
            }),
        };
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        // `as` saturates; the wait is at least 1.
        Err(((1.0 - bucket.tokens) / self.per_second).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_past_the_burst_waits_and_others_do_not() {
        let limiter = RateLimiter::new(0.001, 3);
        for _ in 0..3 {
            assert!(limiter.take("officer:li@S03").is_ok());
        }
        assert!(limiter.take("officer:li@S03").is_err_and(|s| s >= 1));
        assert!(limiter.take("officer:wang@S05").is_ok());
    }
}
