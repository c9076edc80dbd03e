//! `blindwatch model check|approve|register|test`, `blindwatch run`, `blindwatch alerts`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use blindwatch_alerts::{AlertFilter, AlertStore, Pseudonymizer, Status, tier_name, tier_rank};
use blindwatch_audit::Principal;
use blindwatch_common::fsutil;
use blindwatch_crypto::keys::KeyFileKind;
use blindwatch_crypto::sign::SigningKey;
use blindwatch_engine::Engine;
use blindwatch_models::{
    CheckedModel, Model, ModelError, ModelRunReport, Registry, RegistryError, RunError, RunFailed,
    RunService, Submission, check, run_time,
};
use blindwatch_query::GateSettings;
use blindwatch_store::{DataDir, PostgresUrl};
use chrono::NaiveDate;

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

/// k: counts of subjects under it are not shown (`[query] min_group_size`).
fn min_group_size(dir: &DataDir) -> anyhow::Result<u64> {
    let path = dir.policies_dir().join("privacy.toml");
    Ok(GateSettings::load(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .min_group_size)
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

fn describe(c: &CheckedModel, engine: &Engine) -> String {
    let m = &c.model();
    let released: usize = c.plan().released().values().map(|s| s.len()).sum();
    format!(
        "{} v{} [{} {}] {} / {}: purpose {}, reads {}, {} column keys released, {} tiers, evidence {}; digest {}, to be approved by {}",
        m.id,
        m.version,
        m.category,
        m.category.zh(),
        m.title.zh,
        m.title.en,
        m.purpose,
        c.plan()
            .released()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        released,
        m.tiers.len(),
        m.evidence.join(", "),
        m.digest(),
        approvers(c, engine).join(", ")
    )
}

/// The partners who must approve a checked model: the owners of the data it reads.
fn approvers(c: &CheckedModel, engine: &Engine) -> Vec<String> {
    blindwatch_models::approval::readers(c, engine.contracts())
        .into_iter()
        .collect()
}

/// The model files among `paths`: a file as given, a directory's `*.toml` but its fixtures
/// (`*.test.toml`), sorted.
fn model_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("reading {}", p.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", p.display()))?;
        found.retain(|f| {
            f.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".toml") && !n.ends_with(".test.toml"))
        });
        if found.is_empty() {
            bail!("{} holds no model file (<id>.toml)", p.display());
        }
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

pub async fn model_check(data_dir: &Path, paths: &[PathBuf]) -> anyhow::Result<()> {
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let files = model_files(paths)?;
    let checked = check_files(&engine, &files).await.map_err(|e| report(&e))?;
    for c in &checked {
        println!("ok {}: {}", c.model().file.display(), describe(c, &engine));
    }
    Ok(())
}

/// The partners whose approval a model file needs on this platform (what `model check`
/// prints after "to be approved by").
pub async fn model_approvers(data_dir: &Path, file: &Path) -> anyhow::Result<Vec<String>> {
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let checked = check_files(&engine, &[file.to_owned()])
        .await
        .map_err(|e| report(&e))?;
    Ok(checked.iter().flat_map(|c| approvers(c, &engine)).collect())
}

/// Where `model approve` writes a partner's approval of `model` by default, and where
/// `model register` finds approvals: beside the model file, `<id>.approval.<partner>.json`.
pub fn approval_path(model: &Path, id: &str, partner: &str) -> PathBuf {
    model
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("{id}.approval.{partner}.json"))
}

/// `model approve` (on the partner's machine): signs the partner's approval of this exact
/// model file with its key.
pub fn model_approve(
    partner: &str,
    key: &Path,
    file: &Path,
    out: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let model = Model::load(file).map_err(|e| report(&e))?;
    let key = SigningKey::read(key, KeyFileKind::PartnerSigning)
        .with_context(|| format!("reading the partner key {}", key.display()))?;
    let envelope = blindwatch_models::approval::sign(&model, partner, &key);
    let target = out.map_or_else(|| approval_path(file, &model.id, partner), Path::to_owned);
    fsutil::replace(&target, &envelope.to_json())
        .with_context(|| format!("writing {}", target.display()))?;
    println!(
        "{partner} approved {} v{} (digest {}) with key {}: {}",
        model.id,
        model.version,
        model.digest(),
        key.id(),
        target.display()
    );
    Ok(target)
}

/// The approvals found beside a model file (`<id>.approval.*.json`), sorted.
fn approvals_beside(file: &Path, id: &str) -> anyhow::Result<Vec<PathBuf>> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{id}.approval.");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Checks models and installs them in the data directory's `models/`, each only once every
/// partner whose data it reads approved its exact text. Approvals come from `approvals`
/// (with one model file) and from the `<id>.approval.<partner>.json` files beside each model.
/// Each model is registered or refused on its own; every step is audited.
pub async fn model_register(
    data_dir: &Path,
    files: &[PathBuf],
    approvals: &[PathBuf],
    quiet: bool,
) -> anyhow::Result<()> {
    if !approvals.is_empty() && files.len() != 1 {
        bail!(
            "--approval goes with one model file; register models one at a time, or put each model's approvals beside it as <id>.approval.<partner>.json"
        );
    }
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let models_dir = dir.models_dir();
    let registry = Registry {
        engine: &engine,
        models_dir: &models_dir,
    };
    let audit = tokio::sync::Mutex::new(dir.open_audit_log()?);
    let actor = Principal::new("platform")?;
    let mut refused = 0;
    for file in files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
            bail!("{}: name model files <id>.toml (UTF-8)", file.display());
        };
        let mut paths = approvals.to_vec();
        paths.extend(approvals_beside(file, stem)?);
        let mut envelopes = Vec::new();
        for p in &paths {
            envelopes.push((
                p.display().to_string(),
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            ));
        }
        let submissions: Vec<Submission<'_>> = envelopes
            .iter()
            .map(|(name, bytes)| Submission {
                source_name: name.clone(),
                envelope: bytes,
            })
            .collect();
        match registry
            .register(&audit, &actor, &text, file, &submissions)
            .await
        {
            Ok(approved) => {
                if !quiet {
                    println!("registered {}", describe(approved.checked(), &engine));
                }
            }
            Err(RegistryError::Refused(errors)) => {
                refused += 1;
                for e in &errors {
                    eprintln!("refused {e}");
                }
            }
            Err(e @ (RegistryError::Approvals(_) | RegistryError::Unapproved(_))) => {
                refused += 1;
                eprintln!("refused {}: {e}", file.display());
            }
            Err(e) => return Err(e.into()),
        }
    }
    audit.into_inner().checkpoint()?;
    if refused > 0 {
        bail!("{refused} model(s) refused; they were not registered");
    }
    Ok(())
}

/// Evaluates the registered models (or one) and records their alerts. Every model's checks
/// and partners' approvals are verified again first: if any is refused (audited), none runs.
pub async fn run(
    data_dir: &Path,
    postgres: Option<&PostgresUrl>,
    only: Option<&str>,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<Vec<ModelRunReport>> {
    let dir = DataDir::new(data_dir);
    let engine = open_engine(&dir).await?;
    let pseudonyms = Pseudonymizer::read(&dir.deployment_key())?;
    let store = AlertStore::connect(&dir.alerts_database(postgres)).await?;
    let audit = tokio::sync::Mutex::new(dir.open_audit_log()?);
    let actor = Principal::new("platform:scheduler")?;
    let service = RunService {
        engine: &engine,
        models_dir: &dir.models_dir(),
        alerts: &store,
        pseudonyms: &pseudonyms,
        audit: &audit,
        min_group_size: min_group_size(&dir)?,
    };
    let result = service.run(only, run_time(as_of), &actor).await;
    store.close().await;
    match result {
        Ok(reports) => Ok(reports),
        Err(RunFailed { recorded, error }) => {
            print_runs(&recorded);
            Err(match error {
                RunError::Load(errors) => report(&errors),
                RunError::Refused(refusals) => {
                    for e in &refusals {
                        eprintln!("refused {e}");
                    }
                    anyhow::anyhow!(
                        "{} registered model(s) refused; nothing was run (run the others with --model ID)",
                        refusals.len()
                    )
                }
                RunError::UnknownModel(id) => anyhow::anyhow!(
                    "no registered model `{id}`: register it with `blindwatch model register --data-dir {} FILE`",
                    data_dir.display()
                ),
                RunError::NoModels => anyhow::anyhow!(
                    "no registered models in {}: register some with `blindwatch model register`",
                    dir.models_dir().display()
                ),
                e => e.into(),
            })
        }
    }
}

/// One line per model; every count of subjects reads "fewer than k" below k.
pub fn print_runs(reports: &[ModelRunReport]) {
    for r in reports {
        let s = &r.summary;
        println!(
            "  {:<20} {:>15} subjects {:>15} opened {:>15} raised {:>15} lowered {:>15} resolved {:>15} unchanged  {:>6.2} s",
            s.model,
            s.subjects.to_string(),
            s.opened.to_string(),
            s.raised.to_string(),
            s.lowered.to_string(),
            s.resolved.to_string(),
            s.unchanged.to_string(),
            (r.evaluate + r.record).as_secs_f64()
        );
        for (count, what) in [
            (
                s.without_subject,
                "result rows had no subject (a null token) and were skipped",
            ),
            (
                s.duplicates,
                "subjects had more than one result row and were skipped: group by the subject",
            ),
            (
                s.unroutable,
                "alerting subjects name no valid station and were not routed; fix the route column",
            ),
        ] {
            // Below k nothing is said, not even whether there were any: `model test` shows
            // them on fixture data.
            if let Some(n) = count.released() {
                eprintln!("warning: {}: {n} {what}", s.model);
            }
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
        // Columns red … blue; tier_rank is red 4 … blue 1.
        let i = usize::from(4 - tier_rank(a.tier));
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
