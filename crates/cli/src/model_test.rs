//! `blindwatch model test`: a model's fixture cases, like Prometheus's rule unit tests.
//!
//! Beside `models/<id>.toml`, `models/<id>.test.toml` holds cases. Each case gives input
//! rows per table (raw, as a partner would export them) and the alerts expected as of a day.
//! The case runs the real pipeline in a scratch directory: the partners seal their rows
//! (consortium tokens under a scratch key), the platform ingests, the model is checked, the
//! scratch partners whose data it reads approve it with their scratch keys, and it is
//! evaluated; the expected subjects are tokenised the same way and compared by pseudonym.
//!
//! ```toml
//! [[case]]
//! name = "red: exactly 8 incidents within 30 days"
//! as_of = "2026-06-30"
//! rows = [
//!   # `times` repeats a row; in strings `{n}` is the repeat number (1, 2, ...),
//!   # `{day-K}` the date K days before as_of, `{day}` as_of itself.
//!   { table = "police.incidents", times = 8, values = { incident_id = "JQ{n}", reported_at = "{day-30} 09:00:00", ... } },
//! ]
//! expect = [ { subject = "临江区东城街道 和平路1号", tier = "red", station = "S01", evidence = { incidents_30d = 8 } } ]
//! ```
//! A case with `expect = []` asserts that nothing alerts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use blindwatch_alerts::{Pseudonymizer, tier_name};
use blindwatch_audit::Principal;
use blindwatch_common::normalise;
use blindwatch_contract::ContractSet;
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{ConsortiumTokenizer, LinkageKey};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_ingest::Ingestor;
use blindwatch_models::{Model, Registry, Submission, approval, check, evaluate};
use blindwatch_partner::{Encoding, InputFormat, SealOptions};
use blindwatch_store::Catalog;
use chrono::NaiveDate;

use crate::commands::init_platform;
use crate::models::open_engine;
use blindwatch_models::run_time;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    as_of: NaiveDate,
    #[serde(default)]
    rows: Vec<Row>,
    expect: Vec<Expect>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    table: String,
    #[serde(default = "one")]
    times: u32,
    values: BTreeMap<String, toml::Value>,
}

fn one() -> u32 {
    1
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    subject: String,
    tier: String,
    #[serde(default)]
    station: Option<String>,
    #[serde(default)]
    evidence: BTreeMap<String, toml::Value>,
}

/// The fixture file of a model file: `x.toml` → `x.test.toml`.
pub fn fixture_path(model: &Path) -> PathBuf {
    model.with_extension("test.toml")
}

fn template(s: &str, n: u32, as_of: NaiveDate) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .with_context(|| "an unclosed `{` in a fixture value")?
            + start;
        let key = &rest[start + 1..end];
        if key == "n" {
            out.push_str(&n.to_string());
        } else if key == "day" {
            out.push_str(&as_of.to_string());
        } else if let Some(k) = key.strip_prefix("day-") {
            let k: u64 = k
                .parse()
                .with_context(|| format!("`{{{key}}}`: write {{day-K}} with a number K"))?;
            let d = as_of
                .checked_sub_days(chrono::Days::new(k))
                .with_context(|| format!("`{{{key}}}` is out of range"))?;
            out.push_str(&d.to_string());
        } else {
            bail!("unknown placeholder `{{{key}}}`: use {{n}}, {{day}} or {{day-K}}");
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn cell(v: &toml::Value, n: u32, as_of: NaiveDate) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => template(s, n, as_of)?,
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "fixture values are strings or numbers, not {}",
            other.type_str()
        ),
    })
}

/// Runs every case of each model's fixture; fails if any case fails.
pub async fn model_test(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut failed = 0;
    let mut passed = 0;
    // `models/*.toml` also matches the fixture files: each stands for its model.
    let mut models = std::collections::BTreeSet::new();
    for file in files {
        let name = file.to_string_lossy();
        models.insert(match name.strip_suffix(".test.toml") {
            Some(stem) => PathBuf::from(format!("{stem}.toml")),
            None => file.clone(),
        });
    }
    for file in &models {
        let model = Model::load(file).map_err(|errs| {
            for e in &errs {
                eprintln!("refused {e}");
            }
            anyhow::anyhow!("{} cannot be loaded", file.display())
        })?;
        let fixture_file = fixture_path(file);
        let text = std::fs::read_to_string(&fixture_file).with_context(|| {
            format!(
                "reading {} (each model's test cases sit beside it)",
                fixture_file.display()
            )
        })?;
        let fixture: Fixture =
            toml::from_str(&text).with_context(|| format!("parsing {}", fixture_file.display()))?;
        for case in &fixture.case {
            match run_case(&model, case).await {
                Ok(()) => {
                    passed += 1;
                    println!("ok   {}: {}", model.id, case.name);
                }
                Err(e) => {
                    failed += 1;
                    println!("FAIL {}: {}\n     {e:#}", model.id, case.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} model test case(s) failed");
    }
    Ok(())
}

async fn run_case(model: &Model, case: &Case) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let (dir, public, _) = init_platform(&scratch.path().join("platform")).await?;
    let contracts = ContractSet::load_dir(&dir.contracts_dir())?;
    let tokenizer = ConsortiumTokenizer::new(&LinkageKey::generate()?);

    // The partners' exports.
    let mut tables: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &case.rows {
        tables.entry(r.table.as_str()).or_default().push(r);
    }
    let catalog = Catalog::open(&dir.catalog_path(), false).await?;
    let mut partner_keys: HashMap<String, SigningKey> = HashMap::new();
    let exports = scratch.path().join("exports");
    let outbox = scratch.path().join("outbox");
    std::fs::create_dir_all(&exports)?;
    std::fs::create_dir_all(&outbox)?;
    let mut manifests = Vec::new();
    for (table, rows) in &tables {
        let contract = contracts
            .get(table)
            .with_context(|| format!("fixture table `{table}`"))?;
        let mut csv = csv::Writer::from_path(exports.join(format!("{table}.csv")))?;
        csv.write_record(contract.columns.iter().map(|c| c.name.as_str()))?;
        for r in rows {
            if let Some(unknown) = r
                .values
                .keys()
                .find(|k| !contract.columns.iter().any(|c| &c.name == *k))
            {
                bail!("fixture table `{table}` has no column `{unknown}`");
            }
            for n in 1..=r.times {
                let record = contract
                    .columns
                    .iter()
                    .map(|c| {
                        r.values
                            .get(&c.name)
                            .map_or(Ok(String::new()), |v| cell(v, n, case.as_of))
                    })
                    .collect::<anyhow::Result<Vec<String>>>()?;
                csv.write_record(&record)?;
            }
        }
        csv.flush()?;
        drop(csv);
        let partner = contract.partner.clone();
        if !partner_keys.contains_key(&partner) {
            let key = SigningKey::generate()?;
            let datasets: Vec<String> = tables
                .keys()
                .filter(|t| t.split('.').next() == Some(partner.as_str()))
                .map(|t| t.to_string())
                .collect();
            catalog
                .register_partner(&partner, &key.verifying_key(), &datasets)
                .await?;
            partner_keys.insert(partner.clone(), key);
        }
        let signing_key = partner_keys.get(&partner).with_context(|| "partner key")?;
        let outcome = blindwatch_partner::seal(&SealOptions {
            contract,
            input: &exports.join(format!("{table}.csv")),
            format: InputFormat::Csv(Encoding::Utf8),
            partner: &partner,
            signing_key,
            platform_key: &public,
            tokenizer: &tokenizer,
            sequence: 1,
            out_dir: &outbox,
            batch_rows: 65_536,
            token_cache_limit: blindwatch_partner::DEFAULT_TOKEN_CACHE_LIMIT,
            progress: false,
        })?;
        if let Some((reason, n)) = outcome.manifest.rejected_rows.iter().next() {
            bail!(
                "{n} fixture row(s) of {table} were rejected by the sealer ({reason}): fix the fixture"
            );
        }
        manifests.push(outcome.package.manifest);
    }
    let key = Arc::new(PlatformPrivateKey::read(&dir.platform_private_key())?);
    let ingestor = Ingestor::new(dir.clone(), catalog, contracts, key);
    let mut audit = dir.open_audit_log()?;
    for m in &manifests {
        ingestor.ingest(m, &mut audit).await?;
    }

    // The platform evaluates the model as of the case's day, once every partner whose data
    // it reads approved it with its own key — the scratch partners, through the same
    // approval service as a real platform.
    let mut engine = open_engine(&dir).await?;
    let now = run_time(Some(case.as_of));
    engine.set_clock(Some(now));
    let checked = check(model.clone(), &engine).await.map_err(|errs| {
        anyhow::anyhow!(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let mut envelopes = Vec::new();
    for partner in approval::readers(&checked, engine.contracts()) {
        if !partner_keys.contains_key(&partner) {
            let key = SigningKey::generate()?;
            engine
                .catalog()
                .register_partner(&partner, &key.verifying_key(), &[])
                .await?;
            partner_keys.insert(partner.clone(), key);
        }
        let key = partner_keys.get(&partner).with_context(|| "partner key")?;
        envelopes.push(approval::sign(model, &partner, key).to_json());
    }
    let models_dir = dir.models_dir();
    let registry = Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    let submissions: Vec<Submission<'_>> = envelopes
        .iter()
        .map(|e| Submission {
            source_name: "scratch approval".into(),
            envelope: e,
        })
        .collect();
    let actor = Principal::new("platform")?;
    registry
        .submit_approvals(
            &tokio::sync::Mutex::new(audit),
            &actor,
            &checked,
            &submissions,
            None,
        )
        .await?;
    let approved = approval::require(checked, engine.contracts(), engine.catalog()).await?;
    let pseudonyms = Pseudonymizer::read(&dir.deployment_key())?;
    let evaluation = evaluate(&engine, &approved, &pseudonyms, now).await?;

    let mut found: HashMap<String, &blindwatch_alerts::Finding> = evaluation
        .findings
        .iter()
        .map(|f| (f.subject.as_str().to_owned(), f))
        .collect();
    let mut problems = Vec::new();
    for (i, e) in case.expect.iter().enumerate() {
        let raw = normalise(model.subject, &e.subject).map_err(|err| {
            anyhow::anyhow!(
                "expect[{i}].subject is not a valid {} ({})",
                model.subject,
                err.reason_code()
            )
        })?;
        let token = tokenizer.tokenize_one(&raw);
        let (subject, _) = pseudonyms.subject(model.subject.as_str(), token.as_bytes());
        let Some(f) = found.remove(subject.as_str()) else {
            problems.push(format!("expect[{i}]: no alert (expected {})", e.tier));
            continue;
        };
        if tier_name(f.tier) != e.tier {
            problems.push(format!(
                "expect[{i}]: tier {} (expected {})",
                tier_name(f.tier),
                e.tier
            ));
        }
        if let Some(s) = &e.station
            && f.station.as_str() != s
        {
            problems.push(format!(
                "expect[{i}]: station {} (expected {s})",
                f.station.as_str()
            ));
        }
        for (name, want) in &e.evidence {
            let got = f.evidence.get(name).cloned().flatten();
            let got = serde_json::to_value(&got)?;
            let want_json = serde_json::to_value(want)?;
            let same = match (got.as_f64(), want_json.as_f64()) {
                (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                _ => got == want_json,
            };
            if !same {
                problems.push(format!(
                    "expect[{i}]: evidence {name} = {got} (expected {want_json})"
                ));
            }
        }
    }
    if evaluation.duplicates > 0 {
        problems.push(format!(
            "{} subject(s) had more than one result row and were skipped: group by the subject",
            evaluation.duplicates
        ));
    }
    if !found.is_empty() {
        let mut tiers: Vec<&str> = found.values().map(|f| tier_name(f.tier)).collect();
        tiers.sort_unstable();
        problems.push(format!(
            "{} unexpected alert(s) (tiers {})",
            found.len(),
            tiers.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(problems.join("; "))
    }
}
