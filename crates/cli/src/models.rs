//! `blindwatch model check|register|test`, `blindwatch run`, `blindwatch alerts`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use blindwatch_alerts::{
    AlertFilter, AlertStore, Change, Pseudonymizer, RunOutcome, Status, TIERS, tier_name,
};
use blindwatch_audit::{AuditEvent, AuditRecord, ModelId, Principal};
use blindwatch_common::fsutil;
use blindwatch_engine::Engine;
use blindwatch_models::{CheckedModel, Model, ModelError, check, evaluate, load_dir, record_run};
use blindwatch_store::{DataDir, PostgresUrl};
use chrono::{DateTime, NaiveDate, Utc};

macro_rules! shipped_models {
    ($($id:literal),* $(,)?) => {
        &[$(($id,
             include_str!(concat!("../../../models/", $id, ".toml")),
             include_str!(concat!("../../../models/", $id, ".test.toml")))),*]
    };
}

/// The shipped warning models: (id, model file, fixture file).
pub const SHIPPED_MODELS: &[(&str, &str, &str)] = shipped_models![
    "repeat-address",
    "repeat-caller",
    "escalating-dispute",
    "care-lapse",
    "fugitive-medical",
    "case-linkage",
];

fn report(errors: &[ModelError]) -> anyhow::Error {
    for e in errors {
        eprintln!("refused {e}");
    }
    anyhow::anyhow!("{} problem(s); nothing was changed", errors.len())
}

/// The instant a run evaluates as of: noon UTC of `as_of`, or now.
pub fn run_time(as_of: Option<NaiveDate>) -> DateTime<Utc> {
    as_of
        .and_then(|d| d.and_hms_opt(12, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or_else(Utc::now)
}

pub async fn open_engine(dir: &DataDir) -> anyhow::Result<Engine> {
    if !dir.is_initialised() {
        bail!(
            "{} is not a platform data directory: run `blindwatch keys init --data-dir {}` first",
            dir.root().display(),
            dir.root().display()
        );
    }
    Ok(Engine::open(dir).await?)
}

async fn check_files(
    engine: &Engine,
    files: &[PathBuf],
) -> Result<Vec<CheckedModel>, Vec<ModelError>> {
    let mut checked = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match Model::load(f) {
            Err(e) => errors.extend(e),
            Ok(m) => match check(m, engine).await {
                Ok(c) => checked.push(c),
                Err(e) => errors.extend(e),
            },
        }
    }
    if errors.is_empty() {
        Ok(checked)
    } else {
        Err(errors)
    }
}

fn describe(c: &CheckedModel) -> String {
    let m = &c.model;
    let released: usize = c.plan.released().values().map(|s| s.len()).sum();
    format!(
        "{} v{} [{} {}] {} / {}: purpose {}, reads {}, {} column keys released, {} tiers, evidence {}",
        m.id,
        m.version,
        m.category,
        m.category.zh(),
        m.title.zh,
        m.title.en,
        m.purpose,
        c.plan
            .released()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        released,
        m.tiers.len(),
        m.evidence.join(", ")
    )
}

pub async fn model_check(data_dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let checked = check_files(&engine, files).await.map_err(|e| report(&e))?;
    for c in &checked {
        println!("ok {}: {}", c.model.file.display(), describe(c));
    }
    Ok(())
}

/// Checks models and installs them in the data directory's `models/`, audited.
pub async fn model_register(data_dir: &Path, files: &[PathBuf], quiet: bool) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let mut audit = dir.open_audit_log()?;
    let checked = match check_files(&engine, files).await {
        Ok(c) => c,
        Err(errors) => {
            // A refused registration is audited too: each file, by model id when it has one.
            for file in files {
                let model = Model::load(file).ok().and_then(|m| ModelId::new(m.id).ok());
                audit.append(&AuditRecord::now(
                    Principal::new("platform")?,
                    AuditEvent::ModelRegistrationRefused {
                        model,
                        principal: Principal::new("platform")?,
                        rule: blindwatch_audit::ReasonCode::new("model-refused")?,
                    },
                ))?;
            }
            audit.checkpoint()?;
            return Err(report(&errors));
        }
    };
    std::fs::create_dir_all(dir.models_dir())?;
    for c in &checked {
        let text = std::fs::read(&c.model.file)?;
        let target = dir.models_dir().join(format!("{}.toml", c.model.id));
        audit.append(&AuditRecord::now(
            Principal::new("platform")?,
            AuditEvent::ModelRegistered {
                model: ModelId::new(&c.model.id)?,
                version: c.model.version,
                tiers: c.model.tiers.len() as u32,
            },
        ))?;
        fsutil::replace(&target, &text).with_context(|| format!("writing {}", target.display()))?;
        if !quiet {
            println!("registered {}", describe(c));
        }
    }
    audit.checkpoint()?;
    Ok(())
}

/// One model's run, for reports.
pub struct RunReport {
    pub model: Model,
    pub outcome: RunOutcome,
    pub rows: u64,
    pub without_subject: u64,
    pub unroutable: u64,
    pub elapsed: std::time::Duration,
}

/// Evaluates the registered models (or one) and records their alerts.
pub async fn run(
    data_dir: &Path,
    postgres: Option<&PostgresUrl>,
    only: Option<&str>,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<Vec<RunReport>> {
    let dir = DataDir::new(data_dir);
    let mut engine = open_engine(&dir).await?;
    let now = run_time(as_of);
    engine.set_clock(Some(now));
    let models = load_dir(&dir.models_dir()).map_err(|e| report(&e))?;
    let models: Vec<Model> = models
        .into_iter()
        .filter(|m| only.is_none_or(|id| m.id == id))
        .collect();
    if models.is_empty() {
        match only {
            Some(id) => bail!(
                "no registered model `{id}`: register it with `blindwatch model register --data-dir {} FILE`",
                data_dir.display()
            ),
            None => bail!(
                "no registered models in {}: register some with `blindwatch model register`",
                dir.models_dir().display()
            ),
        }
    }
    let pseudonyms = Pseudonymizer::read(&dir.deployment_key())?;
    let store = AlertStore::connect(&dir.alerts_database(postgres)).await?;
    let mut audit = dir.open_audit_log()?;
    let actor = Principal::new("platform:scheduler")?;
    let mut reports = Vec::new();
    for model in models {
        let started = std::time::Instant::now();
        let checked = check(model, &engine).await.map_err(|e| report(&e))?;
        let evaluation = evaluate(&engine, &checked, &pseudonyms, now).await?;
        let (rows, without_subject, unroutable) = (
            evaluation.rows,
            evaluation.without_subject,
            evaluation.unroutable,
        );
        let outcome =
            record_run(&store, &mut audit, &actor, &checked.model, evaluation, now).await?;
        reports.push(RunReport {
            model: checked.model,
            outcome,
            rows,
            without_subject,
            unroutable,
            elapsed: started.elapsed(),
        });
    }
    audit.checkpoint()?;
    store.close().await;
    Ok(reports)
}

pub fn print_runs(reports: &[RunReport]) {
    for r in reports {
        let o = &r.outcome;
        println!(
            "  {:<20} {:>8} subjects  {:>5} opened {:>4} raised {:>4} lowered {:>4} resolved {:>5} unchanged  {:>6.2} s",
            r.model.id,
            r.rows,
            o.count(Change::Opened),
            o.count(Change::Raised),
            o.count(Change::Lowered),
            o.count(Change::Resolved),
            o.unchanged,
            r.elapsed.as_secs_f64()
        );
        if r.without_subject > 0 {
            eprintln!(
                "warning: {}: {} result rows had no subject (a null token) and were skipped",
                r.model.id, r.without_subject
            );
        }
        if r.unroutable > 0 {
            eprintln!(
                "warning: {}: {} alerting subjects name no valid station and were not routed; fix the route column",
                r.model.id, r.unroutable
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub struct AlertsQuery<'a> {
    pub station: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub model: Option<&'a str>,
    pub all: bool,
    pub format: Format,
    pub limit: Option<usize>,
}

pub async fn alerts(
    data_dir: &Path,
    postgres: Option<&PostgresUrl>,
    q: &AlertsQuery<'_>,
) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    if postgres.is_none() && !dir.alerts_path().is_file() {
        bail!(
            "{} has no alerts yet: run the models with `blindwatch run --data-dir {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    let tier = match q.tier {
        None => None,
        Some(t) => Some(
            blindwatch_alerts::parse_tier(t)
                .with_context(|| format!("tier `{t}` is not one of red, orange, yellow, blue"))?,
        ),
    };
    let store = AlertStore::connect(&dir.alerts_database(postgres)).await?;
    let mut list = store
        .list(&AlertFilter {
            station: q.station.map(str::to_owned),
            tier,
            model: q.model.map(str::to_owned),
            status: (!q.all).then_some(Status::Open),
        })
        .await?;
    store.close().await;
    if let Some(n) = q.limit {
        list.truncate(n);
    }
    match q.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&list)?),
        Format::Table => {
            println!(
                "{:<10} {:<7} {:<19} {:<14} {:<7} {:<6} evidence",
                "alert", "tier", "model", "subject", "station", "status"
            );
            for a in &list {
                let evidence: Vec<String> = a
                    .evidence
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_ref().map_or("-".to_owned(), |v| v.to_string())
                        )
                    })
                    .collect();
                println!(
                    "{:<10} {:<7} {:<19} {:<14} {:<7} {:<6} {}",
                    a.id,
                    tier_name(a.tier),
                    a.model,
                    a.subject,
                    a.station,
                    if a.status == Status::Open {
                        "open"
                    } else {
                        "closed"
                    },
                    evidence.join(" ")
                );
            }
        }
    }
    Ok(())
}

/// Station × tier counts of open alerts.
pub async fn summary(data_dir: &Path) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let store = AlertStore::open(&dir.alerts_path()).await?;
    let list = store
        .list(&AlertFilter {
            status: Some(Status::Open),
            ..AlertFilter::default()
        })
        .await?;
    store.close().await;
    let mut counts: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for a in &list {
        let i = TIERS.iter().position(|t| *t == a.tier).unwrap_or(3);
        counts.entry(a.station.clone()).or_default()[i] += 1;
    }
    println!(
        "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "station", "红 red", "橙 orng", "黄 yell", "蓝 blue", "total"
    );
    let mut totals = [0usize; 4];
    for (station, c) in &counts {
        for (t, n) in totals.iter_mut().zip(c) {
            *t += n;
        }
        println!(
            "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7}",
            station,
            c[0],
            c[1],
            c[2],
            c[3],
            c.iter().sum::<usize>()
        );
    }
    println!(
        "  {:<8} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "all",
        totals[0],
        totals[1],
        totals[2],
        totals[3],
        totals.iter().sum::<usize>()
    );
    Ok(())
}
