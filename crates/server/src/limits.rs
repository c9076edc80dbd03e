//! The server's limits besides connections: per-user request rates (a token bucket for each
//! authenticated user, so one caller or a stolen token cannot take the server from everyone
//! else), query time and memory.

use std::time::Duration;

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

/// Per-user token buckets ([`blindwatch_net::RateLimiter`]) answering with the 429 problem.
pub struct RateLimiter(blindwatch_net::RateLimiter);

impl RateLimiter {
    pub fn new(limits: &Limits) -> RateLimiter {
        RateLimiter(blindwatch_net::RateLimiter::new(
            limits.requests_per_second,
            limits.burst,
        ))
    }

    /// Takes one request from `user`'s bucket; a 429 problem with `Retry-After` when empty.
    pub fn take(&self, user: &str) -> Result<(), Problem> {
        self.0.take(user).map_err(|seconds| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                format!("too many requests from this user; try again in {seconds} s (the server's per-user rate limit, see `blindwatch serve --help`)"),
            )
            .retry_after(seconds)
        })
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
