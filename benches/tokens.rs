//! Tokens per second and per CPU-second: consortium, and blind (RFC 9497 VOPRF with one DLEQ
//! proof per batch, verified by the partner against the pinned key) — in process on one
//! thread (the protocol's own cost, client and authority apart), and end to end through a
//! token authority over loopback HTTP (signed requests, replay book, quota, an fsynced audit
//! entry per batch), cold and warm cache. Beside it, in the same run, the peer: OpenMined
//! PSI (ECDH on P-256), request + server processing + finish per element, timed by its
//! process's CPU time (`../shared/peers/openmined_psi_bench.py`), and the ratio.
//!
//! `cargo bench --workspace --bench tokens` (1,000,000 distinct values);
//! `BLINDWATCH_BENCH_TOKENS=20000 cargo bench --workspace --bench tokens` for a quick run.
//! The peer runs when a Python with `openmined-psi` is found: `BLINDWATCH_PSI_PYTHON`
//! (default `/tmp/psi-venv/bin/python`; make it with
//! `python3 -m venv /tmp/psi-venv && /tmp/psi-venv/bin/pip install openmined-psi`) and the
//! script at `BLINDWATCH_PSI_SCRIPT` (default: `shared/peers/` beside the repository, or
//! `/work/shared/peers/`). CPU figures divide by the process's CPU time (user + system,
//! from /proc/self/stat), which includes the in-process authority's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use blindwatch_common::{IdentifierKind, RawIdentifier, normalise};
use blindwatch_crypto::blind::{
    AuthorityInfo, AuthorityKey, BlindTokenizer, BlindTransport, DEFAULT_REQUEST_ELEMENTS,
};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey, TokenError, Tokenizer};
use blindwatch_tokens::{AuthorityDir, Endpoint, LocalAuthority, Pin, Quotas, blind_tokenizer};

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

/// CPU seconds used by the calling thread so far (nanoseconds from schedstat).
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |ns| ns / 1e9)
}

struct Run {
    tokens: usize,
    wall: f64,
    cpu: f64,
}

impl Run {
    fn per_cpu(&self) -> f64 {
        self.tokens as f64 / self.cpu.max(1e-9)
    }
    fn report(&self, label: &str) {
        let per_cpu = if self.cpu < 0.05 {
            "(too fast to time)".to_owned()
        } else {
            format!("{:.0}", self.per_cpu())
        };
        println!(
            "{label:<50} {:>9} tokens  {:>7.2} s  {:>10.0} tokens/s  {per_cpu:>10} tokens/CPU-s (CPU {:.1} s)",
            self.tokens,
            self.wall,
            self.tokens as f64 / self.wall,
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

/// The authority's key as an in-process transport that clocks the CPU time of its own work
/// (evaluation and the batch proof) on the calling thread.
struct Clocked {
    key: AuthorityKey,
    seconds: Mutex<f64>,
}

impl BlindTransport for Clocked {
    fn info(&self) -> Result<AuthorityInfo, TokenError> {
        self.key.info()
    }
    fn evaluate(&self, blinded: &[u8]) -> Result<Vec<u8>, TokenError> {
        let started = thread_cpu_seconds();
        let answer = self.key.evaluate(blinded);
        *self.seconds.lock().unwrap() += thread_cpu_seconds() - started;
        answer
    }
}

/// The peer's figure: OpenMined PSI elements per second end to end on one core.
fn peer(n: usize) -> Option<f64> {
    let python = std::env::var("BLINDWATCH_PSI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/tmp/psi-venv/bin/python"));
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = std::env::var("BLINDWATCH_PSI_SCRIPT")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            [
                repo.join("../shared/peers/openmined_psi_bench.py"),
                PathBuf::from("/work/shared/peers/openmined_psi_bench.py"),
            ]
            .into_iter()
            .find(|p| p.is_file())
        })?;
    if !python.is_file() {
        println!(
            "peer: OpenMined PSI not run ({} not found; see the header of benches/tokens.rs)",
            python.display()
        );
        return None;
    }
    let m = n.min(50_000);
    // The script times itself with the wall clock; it runs here with its clock swapped for
    // the process's CPU time, so both sides are measured per CPU-second on a shared machine.
    let wrapper = "import runpy, sys, time\ntime.perf_counter = time.process_time\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n";
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(wrapper)
        .arg(&script)
        .arg(m.to_string())
        .arg(m.to_string())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in text.lines() {
        println!("peer | {line}");
    }
    if !out.status.success() {
        println!(
            "peer: OpenMined PSI failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    text.lines()
        .find_map(|l| l.strip_prefix("client-side round trip per element: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn main() {
    let n: usize = std::env::var("BLINDWATCH_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "tokens benchmark: {n} distinct phone numbers, {cores} cores, sealer batches of {BATCH}, requests of {DEFAULT_REQUEST_ELEMENTS}"
    );
    let ids: Vec<RawIdentifier> = (0..n)
        .map(|i| normalise(IdentifierKind::Phone, &format!("13{i:09}")).unwrap())
        .collect();

    let consortium = ConsortiumTokenizer::new(&LinkageKey::from_bytes([7; 32]));
    run(&consortium, &ids).report("consortium (HMAC-SHA256, in process)");

    // The protocol alone, one thread: blind, evaluate + prove, verify + finalise.
    let clocked = Arc::new(Clocked {
        key: AuthorityKey::generate().unwrap(),
        seconds: Mutex::new(0.0),
    });
    let public = clocked.key.public_key().clone();
    let core = BlindTokenizer::connect(clocked.clone(), &public, None)
        .unwrap()
        .with_in_flight(1);
    let protocol = run(&core, &ids);
    protocol.report("blind VOPRF in process, 1 thread (client+authority)");
    let authority_cpu = *clocked.seconds.lock().unwrap();
    let client_cpu = (protocol.cpu - authority_cpu).max(1e-9);
    println!(
        "{:<50} authority (evaluate + 1 proof per batch) {:>8.0} tokens/CPU-s, client (blind + verify + finalise) {:>8.0} tokens/CPU-s",
        "",
        n as f64 / authority_cpu.max(1e-9),
        n as f64 / client_cpu
    );

    let dir = tempfile::tempdir().unwrap();
    let authority_dir = AuthorityDir::new(dir.path().join("authority"));
    let partner = Arc::new(SigningKey::generate().unwrap());
    authority_dir
        .add_partner("bench", &partner.verifying_key())
        .unwrap();
    let key = AuthorityKey::generate().unwrap();
    let public_file = dir.path().join("authority.pub");
    key.public_key().write(&public_file).unwrap();
    let authority = LocalAuthority::start(authority_dir, key, Quotas::unlimited()).unwrap();
    let cache = dir.path().join("partner");
    std::fs::create_dir_all(&cache).unwrap();
    let endpoint = Endpoint::new(authority.url());
    let pin = Pin::File(public_file);

    let blind = blind_tokenizer(&endpoint, "bench", partner.clone(), &cache, &pin)
        .unwrap()
        .tokenizer;
    let cold = run(&blind, &ids);
    assert_eq!(blind.requested(), n);
    cold.report("blind VOPRF over loopback HTTP, cold cache");

    // A later seal of the same values: a new tokenizer reads the encrypted cache from disk.
    let (cpu0, started) = (cpu_seconds(), Instant::now());
    let again = blind_tokenizer(&endpoint, "bench", partner, &cache, &pin)
        .unwrap()
        .tokenizer;
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
    let entries = authority.authority().with_audit_log(|log| log.size());
    authority.shutdown().unwrap();
    println!(
        "authority audit log: {entries} batch entries; partner cache {:.1} MB for {n} tokens",
        cache_bytes as f64 / 1e6
    );

    if let Some(psi) = peer(n) {
        println!(
            "blind tokens per CPU-second (client and authority, proofs on) vs OpenMined PSI (request + server processing + finish) per CPU-second: in process {:.0} vs {psi:.0} = {:.2}x; end to end over HTTP {:.0} vs {psi:.0} = {:.2}x",
            protocol.per_cpu(),
            protocol.per_cpu() / psi,
            cold.per_cpu(),
            cold.per_cpu() / psi
        );
    }
}
