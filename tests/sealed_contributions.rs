//! End to end through the `blindwatch` binary: seal → ingest → decrypt equals a direct
//! computation; every refusal leaves the platform data directory unchanged; planted canary
//! identifiers appear nowhere on the platform, in packages or in logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

mod support;
use support::{bw, files_under, ok, s};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use arrow_array::{Array, Date32Array, FixedSizeBinaryArray, StringArray};
use blindwatch_common::{IdentifierKind, idcard, normalise};
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

struct Demo {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Demo {
    fn new() -> Demo {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("d");
        ok(&[
            "demo",
            "--data-dir",
            s(&root),
            "--persons",
            "1000",
            "--seed",
            "3",
            "--as-of",
            "2026-11-30",
            // These tests seal more contributions after the demo, without its authority.
            "--tokens",
            "consortium",
        ]);
        Demo { _tmp: tmp, root }
    }
    fn platform(&self) -> PathBuf {
        self.root.join("platform")
    }
    fn partner(&self, name: &str) -> PathBuf {
        self.root.join("partners").join(name)
    }
    /// Seals `input` as `partner` under `contract` with sequence `seq` into `out`.
    fn seal(
        &self,
        partner: &str,
        contract: &Path,
        input: &Path,
        key: &Path,
        platform_pub: &Path,
        seq: u64,
        out: &Path,
    ) -> Output {
        bw(&[
            "partner",
            "seal",
            "--contract",
            s(contract),
            "--input",
            s(input),
            "--partner",
            partner,
            "--partner-key",
            s(key),
            "--platform-key",
            s(platform_pub),
            "--tokens",
            "consortium",
            "--linkage-key",
            s(&self.partner(partner).join("keys/linkage.key")),
            "--seq",
            &seq.to_string(),
            "--out",
            s(out),
        ])
    }
    fn contract(&self, table: &str) -> PathBuf {
        self.platform()
            .join("policies/datasets")
            .join(format!("{table}.toml"))
    }
}

/// Every file under `dir` with its bytes, except the audit log (refusals are audited).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.starts_with(dir.join("audit")) {
                continue;
            }
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn decrypt_all(platform: &Path, file: &Path) -> Vec<arrow_array::RecordBatch> {
    let key = Arc::new(PlatformPrivateKey::read(&platform.join("keys/platform.key")).unwrap());
    let retriever = PlatformKeyRetriever::new(key, Release::All);
    let options = ArrowReaderOptions::new()
        .with_file_decryption_properties(retriever.decryption_properties().unwrap());
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        std::fs::File::open(file).unwrap(),
        options,
    )
    .unwrap()
    .build()
    .unwrap()
    .map(|b| b.unwrap())
    .collect()
}

fn read_gbk_csv(path: &Path) -> Vec<csv::StringRecord> {
    let bytes = std::fs::read(path).unwrap();
    let (text, _, _) = encoding_rs::GB18030.decode(&bytes);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    reader.records().map(|r| r.unwrap()).collect()
}

#[test]
fn seal_ingest_decrypt_round_trip_equals_direct_computation() {
    let demo = Demo::new();
    let platform = demo.platform();
    let stored = platform.join("packages/hospital/visits/hospital.visits.00000001.parquet");
    let batches = decrypt_all(&platform, &stored);

    // What the platform holds: (token, department, visit date) per visit.
    let mut sealed: BTreeMap<(Vec<u8>, String, i32), u32> = BTreeMap::new();
    for b in &batches {
        let person = b
            .column_by_name("person")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap();
        let dept = b
            .column_by_name("department")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let date = b
            .column_by_name("visit_date")
            .unwrap()
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert!(
            b.column_by_name("id_number").is_none() && b.column_by_name("patient_name").is_none()
        );
        for i in 0..b.num_rows() {
            *sealed
                .entry((
                    person.value(i).to_vec(),
                    dept.value(i).to_owned(),
                    date.value(i),
                ))
                .or_default() += 1;
        }
    }

    // Direct computation from the partner's raw export.
    let tokenizer = ConsortiumTokenizer::new(
        &LinkageKey::read(&demo.partner("hospital").join("keys/linkage.key")).unwrap(),
    );
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    let mut direct: BTreeMap<(Vec<u8>, String, i32), u32> = BTreeMap::new();
    let rows = read_gbk_csv(&demo.partner("hospital").join("exports/hospital.visits.csv"));
    for r in &rows {
        let Ok(id) = normalise(IdentifierKind::Person, &r[1]) else {
            continue;
        };
        let date = chrono::NaiveDate::parse_from_str(r[7].trim(), "%Y-%m-%d").unwrap();
        let key = (
            tokenizer.tokenize_one(&id).as_bytes().to_vec(),
            r[5].trim().to_owned(),
            (date - epoch).num_days() as i32,
        );
        *direct.entry(key).or_default() += 1;
    }
    assert!(direct.len() > 1000, "fixture too small: {}", direct.len());
    assert_eq!(sealed, direct);
    let sealed_rows: u32 = sealed.values().sum();
    assert!(
        sealed_rows < rows.len() as u32,
        "messy rows with bad identifiers must have been rejected"
    );

    ok(&["audit", "verify", "--data-dir", s(&platform)]);
    let proof = ok(&["audit", "proof", "--data-dir", s(&platform), "--entry", "1"]);
    let bundle = platform.join("../proof.json");
    std::fs::write(&bundle, proof).unwrap();
    ok(&[
        "audit",
        "verify-proof",
        "--bundle",
        s(&bundle),
        "--key",
        s(&platform.join("keys/log.vkey")),
    ]);
}

fn flip_bit(path: &Path, offset_fraction: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = ((bytes.len() - 1) as f64 * offset_fraction) as usize;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn copy_package(manifest: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let parquet = PathBuf::from(s(manifest).replace(".manifest.json", ".parquet"));
    for f in [manifest, parquet.as_path()] {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    dir.join(manifest.file_name().unwrap())
}

#[test]
fn every_refusal_leaves_the_data_directory_unchanged() {
    let demo = Demo::new();
    let platform = demo.platform();
    let work = demo.root.join("work");
    let hospital = demo.partner("hospital");
    let export = hospital.join("exports/hospital.visits.csv");
    let key = hospital.join("keys/hospital.key");
    let platform_pub = platform.join("keys/platform.pub");
    let contract = demo.contract("hospital.visits");

    let good_dir = work.join("good");
    assert!(
        demo.seal(
            "hospital",
            &contract,
            &export,
            &key,
            &platform_pub,
            2,
            &good_dir
        )
        .status
        .success()
    );
    let good = good_dir.join("hospital.visits.00000002.manifest.json");

    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();
    for (i, frac) in [0.0, 0.003, 0.25, 0.5, 0.75, 0.999, 1.0]
        .into_iter()
        .enumerate()
    {
        let m = copy_package(&good, &work.join(format!("flip-parquet-{i}")));
        flip_bit(
            &PathBuf::from(s(&m).replace(".manifest.json", ".parquet")),
            frac,
        );
        cases.push((format!("flipped bit in parquet at {frac}"), m, "file hash"));
    }
    for (i, frac) in [0.05, 0.3, 0.6, 0.9].into_iter().enumerate() {
        let m = copy_package(&good, &work.join(format!("flip-manifest-{i}")));
        flip_bit(&m, frac);
        cases.push((format!("flipped bit in manifest at {frac}"), m, ""));
    }
    let m = copy_package(&good, &work.join("truncated"));
    let p = PathBuf::from(s(&m).replace(".manifest.json", ".parquet"));
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    cases.push(("truncated parquet".into(), m, "file hash"));

    // Signed with a key the platform does not know for this partner.
    let other_keys = work.join("other-keys");
    ok(&[
        "partner",
        "keygen",
        "--partner",
        "hospital",
        "--out",
        s(&other_keys),
    ]);
    let wrong_key_dir = work.join("wrong-key");
    assert!(
        demo.seal(
            "hospital",
            &contract,
            &export,
            &other_keys.join("hospital.key"),
            &platform_pub,
            2,
            &wrong_key_dir
        )
        .status
        .success()
    );
    cases.push((
        "wrong partner key".into(),
        wrong_key_dir.join("hospital.visits.00000002.manifest.json"),
        "partner:",
    ));

    // A partner the platform never registered.
    let clinic_contract = work.join("clinic.visits.toml");
    std::fs::write(
        &clinic_contract,
        std::fs::read_to_string(&contract)
            .unwrap()
            .replace("partner = \"hospital\"", "partner = \"clinic\""),
    )
    .unwrap();
    ok(&[
        "partner",
        "keygen",
        "--partner",
        "clinic",
        "--out",
        s(&other_keys),
    ]);
    let clinic_dir = work.join("clinic");
    let out = bw(&[
        "partner",
        "seal",
        "--contract",
        s(&clinic_contract),
        "--input",
        s(&export),
        "--partner",
        "clinic",
        "--partner-key",
        s(&other_keys.join("clinic.key")),
        "--platform-key",
        s(&platform_pub),
        "--tokens",
        "consortium",
        "--linkage-key",
        s(&hospital.join("keys/linkage.key")),
        "--seq",
        "2",
        "--out",
        s(&clinic_dir),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cases.push((
        "unknown partner".into(),
        clinic_dir.join("clinic.visits.00000002.manifest.json"),
        "partner:",
    ));

    // Replay of the accepted first contribution.
    let replay = copy_package(
        &hospital.join("outbox/hospital.visits.00000001.manifest.json"),
        &work.join("replay"),
    );
    cases.push(("replayed sequence".into(), replay, "sequence:"));

    // Sealed under a contract the platform does not have (schema mismatch).
    let changed = work.join("changed/hospital.visits.toml");
    std::fs::create_dir_all(changed.parent().unwrap()).unwrap();
    std::fs::write(
        &changed,
        std::fs::read_to_string(&contract).unwrap().replace(
            "{ name = \"hospital\", type = \"utf8\", role = \"attribute\"",
            "{ name = \"hospital\", type = \"utf8\", role = \"drop\" }, #",
        ),
    )
    .unwrap();
    let schema_dir = work.join("schema");
    let out = demo.seal(
        "hospital",
        &changed,
        &export,
        &key,
        &platform_pub,
        2,
        &schema_dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cases.push((
        "schema mismatch".into(),
        schema_dir.join("hospital.visits.00000002.manifest.json"),
        "contract:",
    ));

    // Sealed to another platform's key.
    let other_platform = work.join("other-platform");
    ok(&["keys", "init", "--data-dir", s(&other_platform)]);
    let other_dir = work.join("other-platform-package");
    assert!(
        demo.seal(
            "hospital",
            &contract,
            &export,
            &key,
            &other_platform.join("keys/platform.pub"),
            2,
            &other_dir
        )
        .status
        .success()
    );
    cases.push((
        "sealed to another platform".into(),
        other_dir.join("hospital.visits.00000002.manifest.json"),
        "key unwrapping:",
    ));

    let before = snapshot(&platform);
    for (what, package, check) in &cases {
        let out = bw(&["ingest", "--data-dir", s(&platform), s(package)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(check),
            "{what}: expected the `{check}` check to refuse it, got: {stderr}"
        );
        assert!(
            snapshot(&platform) == before,
            "{what}: the data directory changed"
        );
    }
    let report = ok(&["audit", "verify", "--data-dir", s(&platform)]);
    assert!(!report.is_empty());

    // The untouched package is accepted and changes the directory.
    ok(&["ingest", "--data-dir", s(&platform), s(&good)]);
    assert!(snapshot(&platform) != before);
    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    assert!(
        catalog
            .lines()
            .any(|l| l.starts_with("hospital.visits") && l.split_whitespace().nth(1) == Some("2")),
        "{catalog}"
    );
}

fn valid_id(first17: &str) -> String {
    let check = idcard::check_digit(first17.as_bytes()).unwrap() as char;
    format!("{first17}{check}")
}

#[test]
fn canary_identifiers_appear_nowhere_but_in_the_partners_exports() {
    let demo = Demo::new();
    let platform = demo.platform();
    let police = demo.partner("police");
    let canary_id = valid_id("99010119770707424");
    let canary_party = valid_id("99010119800808515");
    let canary_phone = "19912345678";
    let canary_name = "金丝雀甲乙丙";
    let canary_address = "金丝雀区测试路999号";
    let export = police.join("exports/police.incidents.csv");
    let mut text = std::fs::read_to_string(&export).unwrap();
    for i in 0..3 {
        text.push_str(&format!(
            "JQ-CANARY-{i},2026-11-29 10:00:0{i},S01,dispute,{canary_id},{canary_name},+86 {canary_phone},{canary_party},{canary_address},,金丝雀描述\n"
        ));
    }
    let canary_export = police.join("exports/canary.csv");
    std::fs::write(&canary_export, text).unwrap();
    let out = demo.seal(
        "police",
        &demo.contract("police.incidents"),
        &canary_export,
        &police.join("keys/police.key"),
        &platform.join("keys/platform.pub"),
        2,
        &police.join("outbox"),
    );
    assert!(out.status.success());
    let mut logs = out.stderr.clone();
    logs.extend(out.stdout);
    let out = bw(&[
        "ingest",
        "--data-dir",
        s(&platform),
        s(&police.join("outbox/police.incidents.00000002.manifest.json")),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    logs.extend(out.stderr);
    logs.extend(out.stdout);
    // The models run over the canary rows (three disputes at one address raise alerts) and
    // their alerts are listed: none of it may carry a canary value either.
    for args in [
        vec!["run", "--data-dir", s(&platform), "--as-of", "2026-11-30"],
        vec![
            "alerts",
            "--data-dir",
            s(&platform),
            "--format",
            "json",
            "--all",
        ],
        vec!["alerts", "--data-dir", s(&platform)],
    ] {
        let out = bw(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        logs.extend(out.stderr);
        logs.extend(out.stdout);
    }
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&ok(&[
        "alerts",
        "--data-dir",
        s(&platform),
        "--format",
        "json",
        "--model",
        "repeat-address",
    ]))
    .unwrap();
    let linkage = LinkageKey::read(&police.join("keys/linkage.key")).unwrap();
    let address = normalise(IdentifierKind::Address, canary_address).unwrap();
    let token = ConsortiumTokenizer::new(&linkage).tokenize_one(&address);
    let secret = blindwatch_crypto::keys::read_fixed::<32>(
        &platform.join("keys/deployment.key"),
        blindwatch_crypto::keys::KeyFileKind::Deployment,
    )
    .unwrap();
    let (_, pseudonym) =
        blindwatch_alerts::Pseudonymizer::new(&secret).subject("address", token.as_bytes());
    assert!(
        alerts
            .iter()
            .any(|a| a["subject"] == pseudonym.as_str() && a["tier"] == "blue"),
        "the canary address raised its alert"
    );

    let mut needles: Vec<Vec<u8>> = Vec::new();
    for value in [
        canary_id.as_str(),
        canary_party.as_str(),
        canary_phone,
        canary_name,
        canary_address,
        "金丝雀描述",
    ] {
        needles.push(value.as_bytes().to_vec());
        let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
        needles.push(digest.as_ref().to_vec());
        needles.push(hex::encode(digest).into_bytes());
    }
    let files = files_under(&demo.root, &|p: &Path| {
        p.ends_with("exports") || p.ends_with("keys") && !p.starts_with(&platform)
    });
    assert!(files.iter().any(|f| f.starts_with(&platform)));
    let mut scanned = 0;
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for n in &needles {
            assert!(
                memchr::memmem::find(&bytes, n).is_none(),
                "a canary value appears in {}",
                f.display()
            );
        }
        scanned += 1;
    }
    for n in &needles {
        assert!(
            memchr::memmem::find(&logs, n).is_none(),
            "a canary value appears in the logs"
        );
    }
    assert!(scanned > 10);
    // And the canary rows did arrive: 3 more incidents than the first contribution.
    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    let rows = |seq: &str| -> u64 {
        catalog
            .lines()
            .find(|l| l.starts_with("police.incidents") && l.split_whitespace().nth(1) == Some(seq))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(rows("2"), rows("1") + 3);
}
