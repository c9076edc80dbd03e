//! End to end through the `blindwatch` binary: seal → ingest → decrypt equals a direct
//! computation; every refusal leaves the platform data directory unchanged; planted canary
//! identifiers appear nowhere on the platform, in packages or in logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_arguments
)]

#[path = "support/forge.rs"]
mod forge;
mod support;
use forge::{Layout, Package, partner_key};
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

/// The stored Parquet file of a contribution, as the platform named it (table, sequence,
/// SHA-256).
fn stored_file(platform: &Path, table: &str, sequence: u64) -> PathBuf {
    let (partner, dataset) = table.split_once('.').unwrap();
    let prefix = format!("{table}.{sequence:019}.");
    let dir = platform.join("packages").join(partner).join(dataset);
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".parquet")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
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
    let stored = stored_file(&platform, "hospital.visits", 1);
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
    cases.push(("truncated parquet".into(), m, "file size"));

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Every record of the platform's audit log, oldest first.
fn audit_records(platform: &Path) -> Vec<blindwatch_audit::AuditRecord> {
    let log = blindwatch_store::DataDir::new(platform)
        .open_audit_log()
        .unwrap();
    (0..log.size()).map(|i| log.record(i).unwrap()).collect()
}

/// The earlier contributions still verify (stored files against the catalog and their
/// signed manifests) and query (the engine counts each table's current rows as the catalog
/// records them).
fn still_verify_and_query(platform: &Path) {
    ok(&["catalog", "--data-dir", s(platform), "--verify"]);
    runtime().block_on(async {
        let dir = blindwatch_store::DataDir::new(platform);
        let engine = blindwatch_engine::Engine::open(&dir).await.unwrap();
        let catalog = blindwatch_store::Catalog::open(&dir.catalog_path(), false)
            .await
            .unwrap();
        let mut tables = 0;
        for t in engine.tables() {
            if t.current_sequences.is_empty() {
                continue;
            }
            assert!(t.problem.is_none(), "{}: {:?}", t.name, t.problem);
            let expected: u64 = catalog
                .contributions(&t.name)
                .await
                .unwrap()
                .iter()
                .filter(|c| t.current_sequences.contains(&c.sequence))
                .map(|c| c.row_count)
                .sum();
            let plan = engine
                .plan(&format!("SELECT count(*) FROM {}", t.name))
                .await
                .unwrap();
            let batches = engine.execute(&plan).await.unwrap();
            let n = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::Int64Array>()
                .unwrap()
                .value(0);
            assert_eq!(n as u64, expected, "{}", t.name);
            tables += 1;
        }
        assert!(tables >= 6, "{tables}");
    });
}

/// Seals `input` for `table` as its partner, consortium tokens under `linkage`.
fn seal_with(
    demo: &Demo,
    table: &str,
    input: &Path,
    linkage: &Path,
    seq: u64,
    out: &Path,
    extra: &[&str],
) -> Output {
    let partner = table.split_once('.').unwrap().0;
    let home = demo.partner(partner);
    let (contract, key, platform_pub) = (
        demo.contract(table),
        home.join(format!("keys/{partner}.key")),
        demo.platform().join("keys/platform.pub"),
    );
    let mut args = vec![
        "partner",
        "seal",
        "--contract",
        s(&contract),
        "--input",
        s(input),
        "--partner",
        partner,
        "--partner-key",
        s(&key),
        "--platform-key",
        s(&platform_pub),
        "--tokens",
        "consortium",
        "--linkage-key",
        s(linkage),
        "--out",
        s(out),
    ];
    let seq = seq.to_string();
    args.extend(["--seq", &seq]);
    args.extend_from_slice(extra);
    bw(&args)
}

fn manifest_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap()
}

/// A careless or hostile partner, signing with its own registered key: every way a package
/// can be not what it claims, or claim what it may not, is refused naming the check, each
/// refusal is audited and leaves the data directory as it was, and the earlier
/// contributions still verify and query. A package the same partner seals properly — even
/// one the test re-encrypts itself — is accepted.
#[test]
fn hostile_packages_are_refused_and_change_nothing() {
    let demo = Demo::new();
    let platform = demo.platform();
    let work = demo.root.join("work");
    let hospital = demo.partner("hospital");
    let linkage = hospital.join("keys/linkage.key");
    let key = partner_key(&hospital.join("keys/hospital.key"));
    let platform_pub = platform.join("keys/platform.pub");
    let export = hospital.join("exports/hospital.visits.csv");
    let out = seal_with(
        &demo,
        "hospital.visits",
        &export,
        &linkage,
        2,
        &work.join("good"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good_manifest = manifest_in(&work.join("good"));
    let good = Package::read(&good_manifest);
    let rows = forge::decrypt(
        &platform,
        &PathBuf::from(s(&good_manifest).replace(".manifest.json", ".parquet")),
    );
    let resealed = |layout: Layout| {
        good.clone()
            .with_file(forge::write(&rows, &layout, &platform_pub))
    };
    let at_sequence = |p: Package, seq: u64| {
        p.edit(|m| {
            m.sequence = seq;
            m.file_name = format!("hospital.visits.{seq:08}.parquet");
        })
    };
    let id_number = valid_id("11010519491231002");
    let other_key = SigningKeyForTest::new();

    let mut cases: Vec<(String, PathBuf, &str)> = Vec::new();
    let forged = |cases: &mut Vec<(String, PathBuf, &str)>,
                  p: &Package,
                  signer: &blindwatch_crypto::sign::SigningKey|
     -> PathBuf { p.write(&work.join(format!("case-{}", cases.len())), signer) };
    macro_rules! case {
        ($what:expr, $package:expr, $check:expr $(,)?) => {{
            let path = forged(&mut cases, &$package, &key);
            cases.push(($what.to_string(), path, $check));
        }};
    }

    // --- Not sealed as the manifest says.
    case!("plain Parquet", &resealed(Layout::Plain), "sealing:");
    // The tokens counted at sealing must be the file's: one more (here, more than the rows:
    // the manifest's own grammar refuses it) or one fewer (the file is counted) is refused.
    for (what, delta, check) in [
        ("one more", 1i64, "manifest:"),
        ("one fewer", -1, "contract:"),
    ] {
        case!(
            format!("a token count {what} than the file holds"),
            &good.clone().edit(|m| {
                let n = m.token_counts.values_mut().next().unwrap();
                *n = n.checked_add_signed(delta).unwrap();
            }),
            check,
        );
    }
    case!(
        "plaintext footer",
        &resealed(Layout::PlaintextFooter),
        "sealing:"
    );
    for column in ["person", "department", "visit_date"] {
        case!(
            &format!("column {column} unencrypted"),
            &resealed(Layout::Unencrypted(column)),
            "sealing:",
        );
    }
    case!(
        "columns under the footer key",
        &resealed(Layout::FooterKeyOnly),
        "sealing:"
    );
    case!(
        "a column's key wrapped for another column",
        &resealed(Layout::KeyWrappedFor {
            column: "department",
            name: "visit_date",
        }),
        "sealing:",
    );
    case!(
        "the footer key wrapped for a column",
        &resealed(Layout::FooterWrappedFor("person")),
        "sealing:",
    );
    case!(
        "not Parquet at all",
        &good
            .clone()
            .with_file(b"PAR1 this is not a parquet file PAR1".to_vec()),
        "sealing:",
    );

    // --- Names, sequences, times, counts outside the grammar.
    case!(
        "the file name of an earlier contribution",
        &good
            .clone()
            .edit(|m| m.file_name = "hospital.visits.00000001.parquet".into()),
        "manifest:",
    );
    case!(
        "a path as file name",
        &good
            .clone()
            .edit(|m| m.file_name = "../../catalog.sqlite".into()),
        "manifest:",
    );
    for seq in [0, 1 << 63, (1 << 63) + 2, u64::MAX] {
        case!(
            &format!("sequence {seq}"),
            &at_sequence(good.clone(), seq),
            "manifest:",
        );
    }
    case!(
        "replayed sequence 1",
        &at_sequence(good.clone(), 1),
        "sequence:"
    );
    for bad in [
        id_number.clone(),
        "2026-11-30T08:00:00+08:00".into(),
        "2026-11-30".into(),
        format!("2026-11-30T00:00:00Z {id_number}"),
        String::new(),
    ] {
        case!(
            "created_at outside RFC 3339 UTC",
            &good.clone().edit(|m| m.created_at = bad),
            "manifest:",
        );
    }
    for reason in [
        id_number.clone(),
        format!("id_number:{id_number}"),
        format!("{id_number}:blank"),
        "no_such_column:blank".into(),
        "department:id_check_digit".into(),
        "patient_name:blank".into(),
        "visit_date:bad_integer".into(),
    ] {
        case!(
            "rejected_rows outside `<column>:<code>`",
            &good.clone().edit(|m| {
                m.rejected_rows.insert(reason, 1);
                m.input_rows += 1;
            }),
            "manifest:",
        );
    }
    case!(
        "partner_key_id not the signer's",
        &good
            .clone()
            .edit(|m| m.partner_key_id = other_key.id.clone()),
        "manifest:",
    );
    case!(
        "an unknown manifest format",
        &good.clone().edit(|m| m.format = 4),
        "manifest:",
    );
    for (what, edit) in [
        (
            "an extra field carrying an ID number",
            Box::new(|j: &mut serde_json::Value| j["note"] = id_number.clone().into())
                as Box<dyn Fn(&mut serde_json::Value)>,
        ),
        (
            "a format 1 manifest",
            Box::new(|j: &mut serde_json::Value| {
                j["format"] = 1.into();
                let o = j.as_object_mut().unwrap();
                o.remove("token_counts");
                o.remove("allow_empty");
            }),
        ),
        (
            "a sequence that is not a number",
            Box::new(|j: &mut serde_json::Value| j["sequence"] = "-1".into()),
        ),
    ] {
        let dir = work.join(format!("case-json-{}", cases.len()));
        let path = good.write_json(&dir, &key, edit);
        cases.push((what.into(), path, "manifest:"));
    }
    case!(
        "input rows that do not add up",
        &good.clone().edit(|m| m.input_rows += 5),
        "manifest:",
    );

    // --- Tokens that are not the dataset's.
    let linkage_b = work.join("linkage-b.key");
    ok(&["keys", "linkage", "--out", s(&linkage_b)]);
    let out = seal_with(
        &demo,
        "hospital.visits",
        &export,
        &linkage_b,
        2,
        &work.join("key-b"),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cases.push((
        "another token key".into(),
        manifest_in(&work.join("key-b")),
        "tokens:",
    ));
    case!(
        "another token mode",
        &good
            .clone()
            .edit(|m| m.tokens.mode = blindwatch_crypto::token::TokenMode::Blind),
        "tokens:",
    );

    // --- Files that are not the declared bytes.
    let zero_dir = work.join("dev-zero");
    good.write(&zero_dir, &key);
    std::fs::remove_file(zero_dir.join("package.parquet")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero_dir.join("package.parquet")).unwrap();
    cases.push((
        "/dev/zero as the file".into(),
        zero_dir.join("package.manifest.json"),
        "package:",
    ));
    let mut longer = good.parquet.clone();
    longer.extend(std::iter::repeat_n(0u8, 1 << 20));
    case!(
        "a file longer than declared",
        &Package {
            manifest: good.manifest.clone(),
            parquet: longer,
        },
        "file size:",
    );
    case!(
        "a declared size larger than the file",
        &good.clone().edit(|m| m.file_bytes += 1),
        "file size:",
    );

    // --- An empty replacement the partner did not sign as meant.
    let police = demo.partner("police");
    let header_only = work.join("wanted-empty.csv");
    let wanted_header = std::fs::read_to_string(police.join("exports/police.wanted.csv"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(&header_only, format!("{wanted_header}\n")).unwrap();
    let police_linkage = police.join("keys/linkage.key");
    let refused_seal = seal_with(
        &demo,
        "police.wanted",
        &header_only,
        &police_linkage,
        2,
        &work.join("wanted-empty-refused"),
        &[],
    );
    assert!(!refused_seal.status.success());
    assert!(
        String::from_utf8_lossy(&refused_seal.stderr).contains("--allow-empty"),
        "{}",
        String::from_utf8_lossy(&refused_seal.stderr)
    );
    assert!(
        !work.join("wanted-empty-refused").exists()
            || std::fs::read_dir(work.join("wanted-empty-refused"))
                .unwrap()
                .all(|e| !e
                    .unwrap()
                    .path()
                    .to_string_lossy()
                    .ends_with(".manifest.json"))
    );
    let out = seal_with(
        &demo,
        "police.wanted",
        &header_only,
        &police_linkage,
        2,
        &work.join("wanted-empty"),
        &["--allow-empty"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty_manifest = manifest_in(&work.join("wanted-empty"));
    let empty = Package::read(&empty_manifest);
    assert!(empty.manifest.allow_empty && empty.manifest.row_count == 0);
    let police_key = partner_key(&police.join("keys/police.key"));
    for (what, edit) in [
        (
            "an empty replacement without allow_empty",
            Box::new(|m: &mut blindwatch_crypto::manifest::Manifest| m.allow_empty = false)
                as Box<dyn Fn(&mut blindwatch_crypto::manifest::Manifest)>,
        ),
        (
            "format 2 claiming allow_empty",
            Box::new(|m: &mut blindwatch_crypto::manifest::Manifest| m.format = 2),
        ),
    ] {
        let p = forged(&mut cases, &empty.clone().edit(edit), &police_key);
        cases.push((
            what.into(),
            p,
            if what.starts_with("format") {
                "manifest:"
            } else {
                "empty replacement:"
            },
        ));
    }

    // Staging left by a killed ingest is swept at the next start, refusal or not.
    let tmp = platform.join("tmp");
    std::fs::write(tmp.join(".ingest-killed"), vec![7u8; 4096]).unwrap();
    std::fs::create_dir_all(tmp.join("upload-killed")).unwrap();
    std::fs::write(tmp.join("upload-killed/package.parquet"), b"x").unwrap();
    let out = bw(&["ingest", "--data-dir", s(&platform), s(&cases[0].1)]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "staging swept");

    let before = snapshot(&platform);
    let audited_before = audit_records(&platform).len();
    for (what, package, check) in &cases {
        let out = bw(&["ingest", "--data-dir", s(&platform), s(package)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(check),
            "{what}: expected the `{check}` check to refuse it, got: {stderr}"
        );
        assert!(
            !stderr.contains(&id_number),
            "{what}: the refusal quotes the manifest"
        );
        assert!(
            snapshot(&platform) == before,
            "{what}: the data directory changed"
        );
    }
    // Each attempt is one audit entry: the refusal, with its reason code.
    let records = audit_records(&platform);
    let refusals: Vec<String> = records[audited_before..]
        .iter()
        .map(|r| match &r.event {
            blindwatch_audit::AuditEvent::ContributionRefused { reason, .. } => {
                reason.as_str().to_owned()
            }
            other => panic!("unexpected audit entry {other:?}"),
        })
        .collect();
    assert_eq!(refusals.len(), cases.len());
    for code in [
        "not-sealed",
        "bad-manifest",
        "stale-sequence",
        "token-key-mismatch",
        "bad-package",
        "bad-file-size",
        "empty-replacement",
    ] {
        assert!(refusals.iter().any(|r| r == code), "{code}: {refusals:?}");
    }
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
    still_verify_and_query(&platform);

    // The partner's own properly sealed packages go in, under names the platform gives.
    let first = stored_file(&platform, "hospital.visits", 1);
    let first_bytes = std::fs::read(&first).unwrap();
    ok(&["ingest", "--data-dir", s(&platform), s(&good_manifest)]);
    let control = at_sequence(resealed(Layout::Sealed), 3).write(&work.join("control"), &key);
    ok(&["ingest", "--data-dir", s(&platform), s(&control)]);
    for seq in [2, 3] {
        let stored = stored_file(&platform, "hospital.visits", seq);
        let name = stored.file_name().unwrap().to_string_lossy().into_owned();
        let sha = blindwatch_crypto::sha256_hex(&std::fs::read(&stored).unwrap());
        assert_eq!(name, format!("hospital.visits.{seq:019}.{sha}.parquet"));
    }
    assert_eq!(std::fs::read(&first).unwrap(), first_bytes);
    // An empty replacement the partner signed as meant empties the dataset, audited as such.
    ok(&["ingest", "--data-dir", s(&platform), s(&empty_manifest)]);
    assert!(audit_records(&platform).iter().any(|r| matches!(
        &r.event,
        blindwatch_audit::AuditEvent::EmptyContributionAccepted {
            replaced: true,
            sequence: 2,
            ..
        }
    )));
    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    assert!(
        catalog
            .lines()
            .any(|l| l.starts_with("police.wanted") && l.split_whitespace().nth(2) == Some("0")),
        "{catalog}"
    );
    still_verify_and_query(&platform);
    // Replays of what was just accepted are refused.
    for replay in [&good_manifest, &control] {
        let out = bw(&["ingest", "--data-dir", s(&platform), s(replay)]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("sequence:"));
    }
}

/// A signing key that is not the partner's registered one.
struct SigningKeyForTest {
    id: blindwatch_crypto::KeyId,
}

impl SigningKeyForTest {
    fn new() -> SigningKeyForTest {
        SigningKeyForTest {
            id: blindwatch_crypto::sign::SigningKey::generate()
                .unwrap()
                .id()
                .clone(),
        }
    }
}

/// A dataset's token key changes only through `dataset rotate-tokens`: before it a package
/// under another key is refused (the table stays usable); after it only the new generation
/// is read, the old one stays stored and verifiable, and the rotation is audited.
#[test]
fn a_token_key_change_needs_an_explicit_rotation() {
    let demo = Demo::new();
    let platform = demo.platform();
    let work = demo.root.join("work");
    let hospital = demo.partner("hospital");
    let export = hospital.join("exports/hospital.visits.csv");
    let linkage_b = work.join("linkage-b.key");
    std::fs::create_dir_all(&work).unwrap();
    ok(&["keys", "linkage", "--out", s(&linkage_b)]);
    let key_b = ConsortiumTokenizer::new(&LinkageKey::read(&linkage_b).unwrap());
    let key_b_id = blindwatch_crypto::token::Tokenizer::key_id(&key_b).to_string();
    let sealed = |seq: u64, linkage: &Path, dir: &str| -> PathBuf {
        let out = seal_with(
            &demo,
            "hospital.visits",
            &export,
            linkage,
            seq,
            &work.join(dir),
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        manifest_in(&work.join(dir))
    };
    let under_b = sealed(2, &linkage_b, "b2");
    let first = stored_file(&platform, "hospital.visits", 1);
    let first_bytes = std::fs::read(&first).unwrap();

    let before = snapshot(&platform);
    let out = bw(&["ingest", "--data-dir", s(&platform), s(&under_b)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tokens:") && stderr.contains("dataset rotate-tokens"),
        "{stderr}"
    );
    assert!(snapshot(&platform) == before);
    still_verify_and_query(&platform);

    // The operator rotates; the same tokens again are refused.
    let rotated = ok(&[
        "dataset",
        "rotate-tokens",
        "--data-dir",
        s(&platform),
        "--dataset",
        "hospital.visits",
        "--tokens",
        "consortium",
        "--key-id",
        &key_b_id,
    ]);
    assert!(rotated.contains("generation 2"), "{rotated}");
    for (bad_key, dataset) in [
        (key_b_id.as_str(), "hospital.visits"),
        ("110101199003071234", "hospital.visits"),
        (key_b_id.as_str(), "hospital.nothing"),
    ] {
        let out = bw(&[
            "dataset",
            "rotate-tokens",
            "--data-dir",
            s(&platform),
            "--dataset",
            dataset,
            "--tokens",
            "consortium",
            "--key-id",
            bad_key,
        ]);
        assert!(!out.status.success(), "{bad_key} {dataset}");
    }
    assert!(audit_records(&platform).iter().any(|r| matches!(
        &r.event,
        blindwatch_audit::AuditEvent::TokenGenerationStarted { generation: 2, .. }
    )));
    // Now the key-B package goes in; a key-A one is refused.
    ok(&["ingest", "--data-dir", s(&platform), s(&under_b)]);
    let under_a = sealed(3, &hospital.join("keys/linkage.key"), "a3");
    let out = bw(&["ingest", "--data-dir", s(&platform), s(&under_a)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens:"));

    let catalog = ok(&["catalog", "--data-dir", s(&platform)]);
    assert!(
        catalog.contains("hospital.visits: token generation 2")
            && catalog.contains("1 current contribution(s)"),
        "{catalog}"
    );
    // The old generation stays stored, byte for byte, and matches its catalog hash.
    assert_eq!(std::fs::read(&first).unwrap(), first_bytes);
    // The table reads generation 2 only: its count is the new contribution's rows.
    runtime().block_on(async {
        let dir = blindwatch_store::DataDir::new(&platform);
        let engine = blindwatch_engine::Engine::open(&dir).await.unwrap();
        let info = engine
            .tables()
            .into_iter()
            .find(|t| t.name == "hospital.visits")
            .unwrap();
        assert_eq!(info.current_sequences, [2]);
        assert!(info.problem.is_none());
        engine.verify_table("hospital.visits").await.unwrap();
    });
    ok(&["catalog", "--data-dir", s(&platform), "--verify"]);
    ok(&["audit", "verify", "--data-dir", s(&platform)]);
}
