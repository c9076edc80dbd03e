//! Reference-city generation: 100,000 residents (≈ 700,000 CSV rows over six files, plus
//! the planted scenarios and `ground_truth.json`), written to a temporary directory.
//!
//! Run: `cargo bench -p blindwatch-bench --bench synth`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use blindwatch_synth::{SynthConfig, generate};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

const PERSONS: u64 = 100_000;

fn config(seed: u64) -> SynthConfig {
    SynthConfig::new(
        PERSONS,
        seed,
        chrono::NaiveDate::from_ymd_opt(2025, 6, 30).unwrap(),
    )
}

fn synth(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // One run up front, to show what a single generation writes.
    let summary = generate(&config(1), dir.path()).unwrap();
    let rows: u64 = summary.files.iter().map(|f| f.rows).sum();
    let bytes: u64 = summary.files.iter().map(|f| f.bytes).sum();
    eprintln!("{summary}  total: {rows} rows, {bytes} bytes");

    let mut group = c.benchmark_group("synth");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(PERSONS));
    group.bench_function("generate_100k_persons", |b| {
        b.iter(|| generate(&config(1), dir.path()).unwrap());
    });
    group.finish();
}

criterion_group!(benches, synth);
criterion_main!(benches);
