//! Audit log benchmarks: durable appends per second for several group-commit batch sizes,
//! and proof cost at 1,000,000 entries (proofs read O(log n) stored hashes).
//!
//! Run: `cargo bench -p blindwatch-bench --bench audit`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use blindwatch_audit::{
    AuditEvent, AuditLog, AuditRecord, LogSigner, PartnerId, Principal, verify_consistency,
    verify_inclusion,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

const BIG: u64 = 1_000_000;

fn pkcs8() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn signer(pkcs8: &[u8]) -> LogSigner {
    LogSigner::from_pkcs8("bench.example/audit", pkcs8).unwrap()
}

fn record(n: u64) -> AuditRecord {
    AuditRecord::now(
        Principal::new("partner:hospital").unwrap(),
        AuditEvent::ContributionAccepted {
            partner: PartnerId::new("hospital").unwrap(),
            dataset: blindwatch_audit::DatasetId::new("visits").unwrap(),
            sequence: n,
            rows: 1000 + n,
        },
    )
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit/append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for batch in [1u64, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let key = pkcs8();
        let mut log = AuditLog::open(dir.path(), signer(&key)).unwrap();
        let records: Vec<AuditRecord> = (0..batch).map(record).collect();
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, _| {
            b.iter(|| log.append_batch(&records).unwrap());
        });
    }
    group.finish();
}

/// Builds a log of `BIG` entries once (group commits of 10,000) and signs a checkpoint.
fn big_log(dir: &std::path::Path, key: &[u8]) -> AuditLog {
    let started = Instant::now();
    let mut log = AuditLog::open(dir, signer(key)).unwrap();
    let mut next = 0;
    while next < BIG {
        let batch: Vec<AuditRecord> = (next..(next + 10_000).min(BIG)).map(record).collect();
        next += batch.len() as u64;
        log.append_batch(&batch).unwrap();
    }
    log.checkpoint().unwrap();
    eprintln!(
        "built a {BIG}-entry audit log in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    log
}

fn proofs(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let key = pkcs8();
    let log = big_log(dir.path(), &key);
    let root = log.root();
    let mut group = c.benchmark_group("audit/proof_1m");
    group.sample_size(50);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    // A cheap deterministic spread of indexes over the whole log.
    let mut i = 0u64;
    let mut next_index = move || {
        i = (i + 7_919 * 97) % BIG;
        i
    };
    group.bench_function("inclusion_proof", |b| {
        b.iter_batched(
            &mut next_index,
            |index| log.inclusion_proof(index, BIG).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.bench_function("consistency_proof", |b| {
        b.iter_batched(
            || next_index().max(1),
            |old| log.consistency_proof(old, BIG).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let index = 123_457;
    let proof = log.inclusion_proof(index, BIG).unwrap();
    let leaf = log.leaf_hash(index).unwrap();
    group.bench_function("verify_inclusion", |b| {
        b.iter(|| verify_inclusion(index, BIG, &leaf, &proof, &root).unwrap());
    });
    let old = 654_321;
    let old_root = log.root_at(old).unwrap();
    let cproof = log.consistency_proof(old, BIG).unwrap();
    group.bench_function("verify_consistency", |b| {
        b.iter(|| verify_consistency(old, BIG, &cproof, &old_root, &root).unwrap());
    });
    group.bench_function("inclusion_bundle", |b| {
        b.iter(|| log.inclusion_bundle(index).unwrap());
    });
    group.finish();

    // Reopening a 1M-entry log must not rescan it.
    drop(log);
    let mut group = c.benchmark_group("audit/open_1m");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("open", |b| {
        b.iter(|| AuditLog::open(dir.path(), signer(&key)).unwrap());
    });
    group.finish();

    // Full verification re-reads and rehashes everything: timed once, not sampled.
    let public = signer(&key).public_key().clone();
    let started = Instant::now();
    let report = blindwatch_audit::verify(dir.path(), &public).unwrap();
    assert!(report.is_ok(), "{report}");
    eprintln!(
        "audit/verify_1m: full verification of {} entries took {:.2} s",
        report.entries,
        started.elapsed().as_secs_f64()
    );
}

criterion_group!(benches, appends, proofs);
criterion_main!(benches);
