//! Per-user request rates: a token bucket for each authenticated user, so one caller (or a
//! stolen token) cannot take the server from everyone else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::problem::Problem;

/// What `serve` bounds besides connections (which `blindwatch-net` bounds).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests per second each user may sustain.
    pub requests_per_second: f64,
    /// Requests a user may make at once above the sustained rate.
    pub burst: u32,
    /// Longest a gated query may run; it is then cancelled and refused.
    pub query_timeout: Duration,
    /// DataFusion's memory pool for one query's execution, bytes.
    pub query_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            requests_per_second: 20.0,
            burst: 40,
            query_timeout: Duration::from_secs(30),
            query_memory_bytes: 1024 * 1024 * 1024,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by the user's principal name (only authenticated users get one, so
/// the map is bounded by the users table).
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> RateLimiter {
        RateLimiter {
            rate: limits.requests_per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(limits.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `user`'s bucket; a 429 problem with `Retry-After` when empty.
    pub fn take(&self, user: &str) -> Result<(), Problem> {
        let now = Instant::now();
        // A poisoned map only means another request panicked mid-update: the buckets are
        // still numbers, keep using them.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.rate).ceil().max(1.0);
        // `as` saturates; wait is at least 1.
        let seconds = wait as u64;
        Err(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            format!("too many requests from this user; try again in {seconds} s (the server's per-user rate limit, see `blindwatch serve --help`)"),
        )
        .retry_after(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_past_the_burst_is_refused_with_retry_after_and_others_are_not() {
        let limiter = RateLimiter::new(&Limits {
            requests_per_second: 0.001,
            burst: 3,
            ..Limits::default()
        });
        for _ in 0..3 {
            assert!(limiter.take("officer:li@S03").is_ok());
        }
        let refused = limiter.take("officer:li@S03").unwrap_err();
        assert_eq!(refused.status, 429);
        assert!(refused.retry_after.is_some_and(|s| s >= 1));
        assert!(limiter.take("officer:wang@S05").is_ok());
    }
}
