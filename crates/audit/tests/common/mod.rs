//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use blindwatch_audit::{AuditEvent, AuditRecord, LogSigner, PartnerId, Principal};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;

pub const ORIGIN: &str = "police.example/blindwatch-audit";

pub fn new_pkcs8() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec()
}

pub fn signer(pkcs8: &[u8]) -> LogSigner {
    LogSigner::from_pkcs8(ORIGIN, pkcs8).unwrap()
}

/// A record whose `count` is `n`, so tests can tell entries apart and check their order.
pub fn record(n: u64) -> AuditRecord {
    AuditRecord::now(
        Principal::new("partner:hospital").unwrap(),
        AuditEvent::TokenEvaluationBatch {
            partner: PartnerId::new("hospital").unwrap(),
            count: n,
        },
    )
}

pub fn count_of(r: &AuditRecord) -> u64 {
    match r.event {
        AuditEvent::TokenEvaluationBatch { count, .. } => count,
        ref other => panic!("unexpected event {other:?}"),
    }
}

/// Frames a record the way the log does: `len ‖ index ‖ payload ‖ SHA-256(...)`.
pub fn frame(index: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(payload);
    let sum = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(sum.as_ref());
    out
}

/// Splits a framed file into `(index, payload)` records (test data is well-formed).
pub fn unframe(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let index = u64::from_be_bytes(bytes[at + 4..at + 12].try_into().unwrap());
        out.push((index, bytes[at + 12..at + 12 + len].to_vec()));
        at += 12 + len + 32;
    }
    out
}

pub fn reframe(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    records.iter().flat_map(|(i, p)| frame(*i, p)).collect()
}

pub fn entries_path(dir: &Path) -> std::path::PathBuf {
    dir.join("entries.bin")
}
