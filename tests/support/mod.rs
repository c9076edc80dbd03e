//! Helpers shared by the end-to-end tests that drive the `blindwatch` binary.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the binary with its own debug logs on (so a log line that leaks a value would be
/// caught by the tests that scan output); the libraries' logs stay at warn.
pub fn bw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blindwatch"))
        .args(args)
        .env("BLINDWATCH_LOG", "blindwatch=debug,warn")
        .output()
        .unwrap()
}

/// Runs the binary, fails the test on a non-zero exit, returns standard output.
pub fn ok(args: &[&str]) -> String {
    let out = bw(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The repository root (the tests live in `tests/`, compiled as part of `crates/cli`).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file under `dir`, recursively, except those (and the directories) `skip` names.
pub fn files_under(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if skip(&p) {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
