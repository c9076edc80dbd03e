#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Known-answer tests: the transparency-dev/merkle proof vectors (testdata/merkle). The
//! verifiers must accept exactly the cases with `wantErr: false`.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blindwatch_audit::{verify_consistency, verify_inclusion};
use serde_json::Value;

fn files(kind: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/merkle")
            .join(kind),
        &mut out,
    );
    out.sort();
    out
}

fn bytes(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

fn list(v: &Value) -> Vec<Vec<u8>> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(bytes).collect(),
        other => panic!("unexpected proof {other}"),
    }
}

fn load(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn inclusion_vectors() {
    let (mut accepted, mut rejected) = (0, 0);
    for path in files("inclusion") {
        let v = load(&path);
        let result = verify_inclusion(
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
            &bytes(&v["leafHash"]),
            &list(&v["proof"]),
            &bytes(&v["root"]),
        );
        let want_err = v["wantErr"].as_bool().unwrap();
        assert_eq!(
            result.is_err(),
            want_err,
            "{}: {} -> {result:?}",
            path.display(),
            v["desc"]
        );
        if want_err {
            rejected += 1;
        } else {
            accepted += 1;
        }
    }
    // Guard against silently reading nothing.
    assert!(accepted >= 5 && rejected >= 60, "{accepted} / {rejected}");
}

#[test]
fn consistency_vectors() {
    let (mut accepted, mut rejected) = (0, 0);
    for path in files("consistency") {
        let v = load(&path);
        let result = verify_consistency(
            v["size1"].as_u64().unwrap(),
            v["size2"].as_u64().unwrap(),
            &list(&v["proof"]),
            &bytes(&v["root1"]),
            &bytes(&v["root2"]),
        );
        let want_err = v["wantErr"].as_bool().unwrap();
        assert_eq!(
            result.is_err(),
            want_err,
            "{}: {} -> {result:?}",
            path.display(),
            v["desc"]
        );
        if want_err {
            rejected += 1;
        } else {
            accepted += 1;
        }
    }
    assert!(accepted >= 5 && rejected >= 80, "{accepted} / {rejected}");
}

#[test]
fn vector_licence_is_kept() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/merkle");
    assert!(root.join("LICENSE").is_file());
    assert!(root.join("README.md").is_file());
}
