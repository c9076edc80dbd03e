//! End-to-end evaluation at city scale: generate the reference city, seal every dataset as
//! its partner, ingest, register each warning model with its partners' approvals, then run
//! them through the platform's one run service (`RunService`, as `blindwatch run` and the
//! server do) and time each model's evaluation and recording. The open alerts must equal
//! the generator's `ground_truth.json` exactly (model, pseudonym, tier, station): the
//! benchmark fails loudly otherwise, so speed is never measured on wrong answers.
//! `cargo bench --workspace --bench evaluate -- 100000 1000000`
//! (persons; each size runs in its own temporary directory).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use blindwatch_bench::peak_rss_mib;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use blindwatch_alerts::{AlertStore, Pseudonymizer};
use blindwatch_audit::{AuditLog, LogSigner, Principal};
use blindwatch_contract::ContractSet;
use blindwatch_crypto::keys::{KeyFileKind, write_key_file};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_engine::Engine;
use blindwatch_ingest::Ingestor;
use blindwatch_models::approval;
use blindwatch_partner::{Encoding, InputFormat, SealOptions};
use blindwatch_store::{Catalog, DataDir};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

async fn one(persons: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let as_of = chrono::NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
    let city = tmp.path().join("city");
    let t = Instant::now();
    blindwatch_synth::generate(
        &blindwatch_synth::SynthConfig::new(persons, 7, as_of),
        &city,
    )
    .unwrap();
    let synth_s = t.elapsed().as_secs_f64();

    // The platform.
    let dir = DataDir::new(tmp.path().join("platform"));
    for d in [
        dir.keys_dir(),
        dir.tmp_dir(),
        dir.packages_dir(),
        dir.contracts_dir(),
        dir.models_dir(),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (private, public) = PlatformPrivateKey::generate();
    private.write(&dir.platform_private_key()).unwrap();
    write_key_file(&dir.deployment_key(), KeyFileKind::Deployment, &[9; 32]).unwrap();
    for e in std::fs::read_dir(repo().join("policies/datasets")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.contracts_dir().join(p.file_name().unwrap())).unwrap();
    }
    let contracts = ContractSet::load_dir(&dir.contracts_dir()).unwrap();
    let catalog = Catalog::open(&dir.catalog_path(), true).await.unwrap();
    let log_key = SigningKey::generate().unwrap();
    let mut audit = AuditLog::open(
        dir.audit_dir(),
        LogSigner::from_pkcs8("bench", log_key.pkcs8()).unwrap(),
    )
    .unwrap();

    // Partners seal.
    let tokenizer = ConsortiumTokenizer::new(&LinkageKey::from_bytes([3; 32]));
    let t = Instant::now();
    let mut manifests = Vec::new();
    let mut rows = 0;
    let mut keys = std::collections::HashMap::new();
    for table in blindwatch_synth::DATASETS {
        let contract = contracts.get(table).unwrap();
        if !keys.contains_key(&contract.partner) {
            let key = SigningKey::generate().unwrap();
            let mine: Vec<String> = blindwatch_synth::DATASETS
                .iter()
                .filter(|t| t.starts_with(&format!("{}.", contract.partner)))
                .map(|t| t.to_string())
                .collect();
            catalog
                .register_partner(&contract.partner, &key.verifying_key(), &mine)
                .await
                .unwrap();
            keys.insert(contract.partner.clone(), key);
        }
        let key = &keys[&contract.partner];
        let outcome = blindwatch_partner::seal(&SealOptions {
            contract,
            input: &city.join(format!("{table}.csv")),
            format: InputFormat::Csv(Encoding::Auto),
            partner: &contract.partner,
            signing_key: key,
            platform_key: &public,
            tokenizer: &tokenizer,
            sequence: 1,
            out_dir: &tmp.path().join("outbox"),
            batch_rows: 65_536,
            token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
            progress: false,
        })
        .unwrap();
        rows += outcome.manifest.row_count;
        manifests.push(outcome.package.manifest);
    }
    let seal_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ingestor = Ingestor::new(dir.clone(), catalog, contracts, Arc::new(private));
    for m in &manifests {
        ingestor.ingest(m, &mut audit).await.unwrap();
    }
    let ingest_s = t.elapsed().as_secs_f64();

    // The models: each registered with the approvals of the partners whose data it reads,
    // then run by the platform's run service, as `blindwatch run` does.
    let engine = Engine::open(&dir).await.unwrap();
    let now = blindwatch_models::run_time(Some(as_of));
    let pseudonyms = Pseudonymizer::new(&[9; 32]);
    let store = AlertStore::open(&dir.alerts_path()).await.unwrap();
    let actor = Principal::new("bench").unwrap();
    println!(
        "{persons} persons: synth {synth_s:.1} s, seal {rows} rows {seal_s:.1} s, ingest {ingest_s:.1} s"
    );
    let expected = expected_alerts(&city, &tokenizer, &pseudonyms);
    let models_dir = dir.models_dir();
    let audit = tokio::sync::Mutex::new(audit);
    let registry = blindwatch_models::Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    for m in blindwatch_models::load_dir(&repo().join("models")).unwrap() {
        let t = Instant::now();
        let checked = blindwatch_models::check(m, &engine).await.unwrap();
        let envelopes: Vec<Vec<u8>> = approval::readers(&checked, engine.contracts())
            .iter()
            .map(|p| approval::sign(checked.model(), p, &keys[p]).to_json())
            .collect();
        let submissions: Vec<blindwatch_models::Submission<'_>> = envelopes
            .iter()
            .map(|e| blindwatch_models::Submission {
                source_name: "bench".into(),
                envelope: e,
            })
            .collect();
        let text = std::fs::read_to_string(&checked.model().file).unwrap();
        registry
            .register(&audit, &actor, &text, &checked.model().file, &submissions)
            .await
            .unwrap();
        println!(
            "  {:<20} check and register {:>6.1} ms",
            checked.model().id,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let service = blindwatch_models::RunService {
        engine: &engine,
        models_dir: &models_dir,
        alerts: &store,
        pseudonyms: &pseudonyms,
        audit: &audit,
        min_group_size: 0,
    };
    let total = Instant::now();
    let reports = service.run(None, now, &actor).await.unwrap();
    for r in &reports {
        println!(
            "  {:<20} evaluate {:>6.2} s  record {:>7.1} ms  {:>8} subjects  {:>5} alerts",
            r.summary.model,
            r.evaluate.as_secs_f64(),
            r.record.as_secs_f64() * 1e3,
            r.summary.subjects.to_string(),
            r.summary.opened.to_string(),
        );
    }
    println!(
        "  all six models: {:.2} s; peak RSS {:.0} MiB",
        total.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
    // What the officers see: the open alerts the run recorded.
    let found: std::collections::BTreeSet<Expected> = store
        .list(&blindwatch_alerts::AlertFilter {
            status: Some(blindwatch_alerts::Status::Open),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|a| Expected {
            model: a.model,
            pseudonym: a.subject.as_str().to_owned(),
            tier: blindwatch_alerts::tier_name(a.tier).to_owned(),
            station: a.station,
        })
        .collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    let extra: Vec<_> = found.difference(&expected).collect();
    let mut per_model: std::collections::BTreeMap<(&str, &str), (usize, usize)> =
        std::collections::BTreeMap::new();
    for e in &expected {
        per_model.entry((&e.model, &e.tier)).or_default().0 += 1;
    }
    for f in &found {
        per_model.entry((&f.model, &f.tier)).or_default().1 += 1;
    }
    for ((model, tier), (want, got)) in &per_model {
        if want != got {
            eprintln!("  {model:<20} {tier:<6} planted {want:>6}  found {got:>6}");
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{persons} persons: the alerts differ from ground_truth.json: {} planted alerts missing, {} unplanted found (first missing: {:?}; first extra: {:?})",
        missing.len(),
        extra.len(),
        missing.first(),
        extra.first(),
    );
    println!(
        "  alerts equal ground_truth.json: {} (model, subject, tier, station)",
        expected.len()
    );
    gate_overhead(&engine).await;
}

/// Analysts' questions through the privacy gate (parse, check, charge, per-unit partials,
/// bounds, noise) beside the same aggregate run directly on the engine.
async fn gate_overhead(engine: &Engine) {
    let questions = [
        "SELECT station, count(*) FROM police.incidents GROUP BY station",
        "SELECT station, category, count(*) FROM police.incidents GROUP BY station, category",
        "SELECT drug_category, count(*), sum(amount), avg(amount) FROM insurance.claims GROUP BY drug_category",
        "SELECT department, count(DISTINCT person) FROM hospital.visits GROUP BY department",
        "SELECT status, count(*), avg(income) FROM tax.employment GROUP BY status",
        "SELECT v.department, count(DISTINCT v.person) FROM hospital.visits v JOIN insurance.claims c ON v.person = c.person GROUP BY v.department",
    ];
    let settings = blindwatch_query::GateSettings::default();
    let purpose = blindwatch_audit::Purpose::new("analysis").unwrap();
    let (mut gate_total, mut plain_total) = (0.0, 0.0);
    for (i, sql) in questions.iter().enumerate() {
        let principal = Principal::new(format!("bench-{i}")).unwrap();
        let t = Instant::now();
        let answer = blindwatch_query::answer(engine, sql, &purpose, &settings, &principal)
            .await
            .unwrap();
        let gate_s = t.elapsed().as_secs_f64();
        drop(answer);
        let t = Instant::now();
        let plan = engine.plan(sql).await.unwrap();
        engine.execute(&plan).await.unwrap();
        let plain_s = t.elapsed().as_secs_f64();
        gate_total += gate_s;
        plain_total += plain_s;
        println!(
            "  gate {gate_s:>6.3} s  plain {plain_s:>6.3} s  ×{:.1}  {sql}",
            gate_s / plain_s
        );
    }
    println!(
        "  the gate's questions: {gate_total:.2} s, the same aggregates unguarded {plain_total:.2} s (×{:.1})",
        gate_total / plain_total
    );
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Expected {
    model: String,
    pseudonym: String,
    tier: String,
    station: String,
}

/// The planted alerts of `ground_truth.json`, with subjects tokenised as the partners do and
/// pseudonymised as the platform does.
fn expected_alerts(
    city: &Path,
    tokenizer: &ConsortiumTokenizer,
    pseudonyms: &Pseudonymizer,
) -> std::collections::BTreeSet<Expected> {
    use blindwatch_common::{IdentifierKind, normalise};
    use blindwatch_crypto::token::Tokenizer;
    let truth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(city.join("ground_truth.json")).unwrap()).unwrap();
    truth["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let kind: IdentifierKind = a["subject_kind"].as_str().unwrap().parse().unwrap();
            let raw = normalise(kind, a["subject"].as_str().unwrap()).unwrap();
            let token = tokenizer.tokenize(&[&raw]).unwrap()[0];
            let (_, pseudonym) = pseudonyms.subject(kind.as_str(), token.as_bytes());
            Expected {
                model: a["model"].as_str().unwrap().to_owned(),
                pseudonym: pseudonym.as_str().to_owned(),
                tier: a["tier"].as_str().unwrap().to_owned(),
                station: a["station"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

fn main() {
    let sizes: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100_000]
    } else {
        sizes
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        rt.block_on(one(n));
    }
}
