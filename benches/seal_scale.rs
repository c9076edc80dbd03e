//! Sealing at scale: time, rows/s, MB/s and peak memory (VmHWM) for large exports.
//! `cargo bench -p blindwatch-bench --bench seal_scale -- 1000000 10000000`
//! (each size runs in a child process so that its peak memory is its own).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use blindwatch_bench::peak_rss_mib;
use std::time::Instant;

use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::PlatformPrivateKey;

#[path = "seal.rs"]
#[allow(dead_code)]
mod seal_bench;

fn one(rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("visits.csv");
    seal_bench::write_visits_csv(&input, rows);
    let bytes = std::fs::metadata(&input).unwrap().len();
    let before = peak_rss_mib();
    let contract = seal_bench::contract();
    let key = SigningKey::generate().unwrap();
    let (_, platform) = PlatformPrivateKey::generate();
    let tokenizer = ConsortiumTokenizer::new(&LinkageKey::from_bytes([7; 32]));
    let started = Instant::now();
    let outcome = seal_bench::seal_once(
        &contract,
        &input,
        &key,
        &platform,
        &tokenizer,
        1,
        &dir.path().join("out"),
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seal {rows} rows, {} sealed, {} rejected ({:.0} MB CSV → {:.0} MB sealed): {secs:.1} s, {:.0} rows/s, {:.1} MB/s, peak RSS {:.0} MiB (after writing the CSV: {before:.0} MiB)",
        outcome.manifest.row_count,
        outcome.manifest.rejected_rows.values().sum::<u64>(),
        bytes as f64 / 1e6,
        outcome.manifest.file_bytes as f64 / 1e6,
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        peak_rss_mib(),
    );
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if let Ok(rows) = std::env::var("BLINDWATCH_SEAL_ROWS") {
        one(rows.parse().unwrap());
        return;
    }
    // `cargo bench` passes `--bench`; with no sizes, a quick default.
    let sizes = if sizes.is_empty() {
        vec![200_000]
    } else {
        sizes
    };
    for rows in sizes {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .env("BLINDWATCH_SEAL_ROWS", rows.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}
