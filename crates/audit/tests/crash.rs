#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Crash safety with real processes: this test binary re-executes itself with an
//! environment variable that turns `crash_child_appender` into an endless appender, kills
//! it with SIGKILL after a random short delay, reopens the log and checks it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blindwatch_audit::{AuditLog, verify};
use common::*;
use rand::Rng;

const DIR_VAR: &str = "BLINDWATCH_AUDIT_CRASH_DIR";
const KEY_VAR: &str = "BLINDWATCH_AUDIT_CRASH_KEY";

/// The child process `killed_appender_never_corrupts_the_log` starts and kills: not a test
/// of its own, so ignored (a run that returned at once would pass without testing
/// anything); the parent runs it with `--ignored` and the crash variables set.
#[test]
#[ignore = "the child process of killed_appender_never_corrupts_the_log, which runs it"]
fn crash_child_appender() {
    let (Ok(dir), Ok(key)) = (std::env::var(DIR_VAR), std::env::var(KEY_VAR)) else {
        panic!(
            "{DIR_VAR} and {KEY_VAR} are not set: this is the child of killed_appender_never_corrupts_the_log; run that test instead"
        );
    };
    let mut log = AuditLog::open(&dir, signer(&hex::decode(key).unwrap())).unwrap();
    let mut rng = rand::thread_rng();
    // Bounded even if the parent forgets to kill us.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let first = log.size();
        let n = rng.gen_range(1..=64u64);
        let batch: Vec<_> = (first..first + n).map(record).collect();
        log.append_batch(&batch).unwrap();
        if rng.gen_bool(0.2) {
            log.checkpoint().unwrap();
        }
    }
}

/// Kills the child if the parent test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn killed_appender_never_corrupts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pkcs8 = new_pkcs8();
    let key = signer(&pkcs8).public_key().clone();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut last_size = 0;
    let mut rounds = 0;
    // Several rounds, bounded in time.
    while rounds < 12 && started.elapsed() < Duration::from_secs(20) {
        rounds += 1;
        let child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_appender",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(DIR_VAR, dir.path())
            .env(KEY_VAR, hex::encode(&pkcs8))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..250)));
        child.0.kill().unwrap();
        let status = child.0.wait().unwrap();
        assert!(
            !status.success(),
            "the child must have been killed, not finished"
        );

        let mut log = AuditLog::open(dir.path(), signer(&pkcs8)).unwrap();
        let size = log.size();
        // Entries are never lost across a kill, and each is the record of its index.
        assert!(size >= last_size, "round {rounds}: {size} < {last_size}");
        let covered = log.latest_checkpoint().map_or(0, |c| c.size());
        assert!(covered <= size);
        for i in last_size.saturating_sub(3)..size {
            assert_eq!(count_of(&log.record(i).unwrap()), i, "round {rounds}");
        }
        // The recovered log accepts appends and signs a consistent checkpoint.
        log.append(&record(size)).unwrap();
        log.checkpoint().unwrap();
        last_size = size + 1;
        drop(log);
        let report = verify(dir.path(), &key).unwrap();
        assert!(report.is_ok(), "round {rounds}: {report}");
        assert_eq!(report.entries, last_size);
    }
    assert!(rounds >= 3, "too few rounds ran");
    assert!(last_size > 12, "the child appended nothing");
}
