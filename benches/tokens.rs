//! Tokens per second, blind vs consortium, end to end: normalised identifiers in, tokens
//! out, the blind mode through a token authority over loopback HTTP (signed requests,
//! quota accounting, an audit entry per batch), in the sealer's batches of 65,536 values.
//!
//! `cargo bench -p blindwatch-bench --bench tokens` (1,000,000 distinct values);
//! `BLINDWATCH_BENCH_TOKENS=20000 cargo bench -p blindwatch-bench --bench tokens` for a
//! quick run. Per-core figures divide by the process's CPU time (user + system, from
//! /proc/self/stat), which includes the in-process authority's evaluation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;

use blindwatch_audit::{AuditLog, LogSigner};
use blindwatch_common::{IdentifierKind, RawIdentifier, normalise};
use blindwatch_crypto::blind::AuthorityKey;
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey, Tokenizer};
use blindwatch_tokens::{LocalAuthority, Quotas, blind_tokenizer};

const BATCH: usize = 65_536;

/// CPU seconds used by this process so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is 14th, stime 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Field 14 is at index 11 after the state field (index 0 = field 3).
    (ticks(11) + ticks(12)) / 100.0
}

struct Run {
    tokens: usize,
    wall: f64,
    cpu: f64,
}

impl Run {
    fn report(&self, label: &str) {
        println!(
            "{label:<44} {:>9} tokens  {:>7.2} s  {:>10.0} tokens/s  {:>10.0} tokens/s per core (CPU {:.1} s)",
            self.tokens,
            self.wall,
            self.tokens as f64 / self.wall,
            self.tokens as f64 / self.cpu.max(1e-9),
            self.cpu
        );
    }
}

fn run(tokenizer: &dyn Tokenizer, ids: &[RawIdentifier]) -> Run {
    let (cpu0, started) = (cpu_seconds(), Instant::now());
    let mut n = 0;
    for chunk in ids.chunks(BATCH) {
        let refs: Vec<&RawIdentifier> = chunk.iter().collect();
        n += tokenizer.tokenize(&refs).unwrap().len();
    }
    tokenizer.flush().unwrap();
    Run {
        tokens: n,
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu0,
    }
}

fn main() {
    let n: usize = std::env::var("BLINDWATCH_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("tokens benchmark: {n} distinct phone numbers, {cores} cores, batches of {BATCH}");
    let ids: Vec<RawIdentifier> = (0..n)
        .map(|i| normalise(IdentifierKind::Phone, &format!("13{i:09}")).unwrap())
        .collect();

    let consortium = ConsortiumTokenizer::new(&LinkageKey::from_bytes([7; 32]));
    run(&consortium, &ids).report("consortium (HMAC-SHA256, in process)");

    let dir = tempfile::tempdir().unwrap();
    let log_key = SigningKey::generate().unwrap();
    let audit = AuditLog::open(
        dir.path().join("audit"),
        LogSigner::from_pkcs8("bench/token-authority", log_key.pkcs8()).unwrap(),
    )
    .unwrap();
    let authority = LocalAuthority::start(
        AuthorityKey::generate().unwrap(),
        Quotas::unlimited(),
        Some(audit),
    )
    .unwrap();
    let partner = Arc::new(SigningKey::generate().unwrap());
    authority
        .register_partner("bench", &partner.verifying_key())
        .unwrap();
    let cache = dir.path().join("partner");
    std::fs::create_dir_all(&cache).unwrap();

    let blind = blind_tokenizer(authority.url(), "bench", partner.clone(), &cache).unwrap();
    let cold = run(&blind, &ids);
    assert_eq!(blind.requested(), n);
    cold.report("blind (OPRF over loopback HTTP, cold cache)");

    // A later seal of the same values: a new tokenizer reads the encrypted cache from disk.
    let (cpu0, started) = (cpu_seconds(), Instant::now());
    let again = blind_tokenizer(authority.url(), "bench", partner, &cache).unwrap();
    let open_secs = started.elapsed().as_secs_f64();
    let warm = run(&again, &ids);
    assert_eq!(again.requested(), 0);
    Run {
        tokens: warm.tokens,
        wall: warm.wall + open_secs,
        cpu: cpu_seconds() - cpu0,
    }
    .report("blind, warm cache (cache load included)");
    let cache_bytes: u64 = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let log = authority.shutdown().unwrap().unwrap();
    println!(
        "authority audit log: {} batch entries; partner cache {:.1} MB for {n} tokens",
        log.size(),
        cache_bytes as f64 / 1e6
    );
}
