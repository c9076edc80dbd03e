//! `blindwatch-synth`: the deterministic generator of Blindwatch's reference city.
//!
//! [`generate`] writes one CSV per partner dataset — exactly as each partner would export
//! it, GBK and mess included — plus `ground_truth.json`, which lists every alert the six
//! warning models must raise on that data (and the planted near misses that must raise
//! none). The same [`SynthConfig`] always yields byte-identical files.
//!
//! See the crate README for the columns, rates, scenarios and kinds of mess.

mod city;
mod dates;
mod error;
mod ledger;
mod medical;
mod mess;
mod people;
mod plan;
mod police;
mod rng;
mod tax;
mod vocab;
mod write;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use city::{CITY_EN, CITY_ZH, STATIONS, Station};
pub use error::SynthError;
pub use mess::MessKind;
pub use plan::TruthEntry;
pub use write::FileSummary;

/// Default share of rows that get one kind of mess.
pub const DEFAULT_MESSY_RATE: f64 = 0.02;
/// Fewest residents the planted scenarios can be drawn from.
pub const MIN_PERSONS: u64 = 1_000;
/// Most residents (bounded by the ID-number, phone and address spaces with room to spare).
pub const MAX_PERSONS: u64 = 100_000_000;
/// Name of the ground-truth file in the output directory.
pub const GROUND_TRUTH_FILE: &str = "ground_truth.json";

/// The six datasets, in the order they are reported.
pub const DATASETS: [&str; 6] = [
    "police.incidents",
    "police.wanted",
    "police.mental_health_registry",
    "hospital.visits",
    "insurance.claims",
    "tax.employment",
];

/// What to generate. Equal configs give byte-identical output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SynthConfig {
    /// Residents of the city.
    pub persons: u64,
    pub seed: u64,
    /// Last day of the 365-day activity window.
    pub as_of: chrono::NaiveDate,
    /// Share of rows that get one kind of mess (0 to 0.5; default 0.02).
    pub messy_rate: f64,
}

impl SynthConfig {
    /// A config with the default messy rate.
    pub fn new(persons: u64, seed: u64, as_of: chrono::NaiveDate) -> Self {
        SynthConfig {
            persons,
            seed,
            as_of,
            messy_rate: DEFAULT_MESSY_RATE,
        }
    }

    /// Checks the ranges; [`generate`] calls it first.
    pub fn validate(&self) -> Result<(), SynthError> {
        if !(MIN_PERSONS..=MAX_PERSONS).contains(&self.persons) {
            return Err(SynthError::Persons {
                got: self.persons,
                min: MIN_PERSONS,
                max: MAX_PERSONS,
            });
        }
        if !(0.0..=0.5).contains(&self.messy_rate) {
            return Err(SynthError::MessyRate(self.messy_rate));
        }
        use chrono::Datelike;
        if !(2009..=2099).contains(&self.as_of.year()) {
            return Err(SynthError::AsOf(self.as_of));
        }
        Ok(())
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub out_dir: PathBuf,
    /// One entry per dataset, in [`DATASETS`] order.
    pub files: Vec<FileSummary>,
    pub ground_truth: PathBuf,
    /// Expected alerts per model and tier, and near misses per model (`near_miss`).
    pub planted: BTreeMap<String, BTreeMap<String, u64>>,
    pub alerts: usize,
    pub near_misses: usize,
    /// Rows that got some mess, over all files.
    pub messy_rows: u64,
    pub elapsed: Duration,
}

impl fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {} in {:.1} s",
            self.out_dir.display(),
            self.elapsed.as_secs_f64()
        )?;
        for file in &self.files {
            writeln!(
                f,
                "  {:<40} {:>6} {:>12} rows {:>14} bytes",
                file.file, file.encoding, file.rows, file.bytes
            )?;
        }
        writeln!(
            f,
            "  {} planted alerts, {} near misses, {} messy rows; ground truth in {}",
            self.alerts,
            self.near_misses,
            self.messy_rows,
            self.ground_truth.display()
        )
    }
}

/// Shared read-only context of the file generators.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a SynthConfig,
    pub pop: &'a people::Population,
    pub cal: &'a dates::Calendar,
    pub roles: &'a BTreeMap<u64, plan::Role>,
    pub out_dir: &'a Path,
}

/// One finished file with its mess counts.
pub(crate) struct FileOut {
    pub summary: FileSummary,
    pub mess: BTreeMap<String, u64>,
    pub messy_rows: u64,
}

impl FileOut {
    pub fn finish(out: write::CsvOut, mess: &mess::Mess) -> Result<FileOut, SynthError> {
        Ok(FileOut {
            summary: out.finish()?,
            mess: mess.counts(),
            messy_rows: mess.messy_rows(),
        })
    }
}

#[derive(Serialize)]
struct FileEntry<'a> {
    #[serde(flatten)]
    summary: &'a FileSummary,
    messy_rows: u64,
}

#[derive(Serialize)]
struct Window {
    first_day: String,
    last_day: String,
    days: u32,
}

#[derive(Serialize)]
struct Rates {
    incidents_per_person_year: f64,
    incident_category_weights: BTreeMap<&'static str, u32>,
    hospital_visits_per_person_year: f64,
    insurance_claims_per_person_year: f64,
    wanted_share: f64,
    mental_health_registry_share: f64,
    employment_record_share_of_ages_18_to_65: f64,
    planted_per_model_tier: u64,
}

#[derive(Serialize)]
struct GroundTruth<'a> {
    generator: String,
    as_of: String,
    seed: u64,
    persons: u64,
    messy_rate: f64,
    window: Window,
    rates: Rates,
    files: BTreeMap<&'a str, FileEntry<'a>>,
    stations: &'a [Station],
    planted: &'a BTreeMap<String, BTreeMap<String, u64>>,
    alerts: &'a [TruthEntry],
    near_misses: &'a [TruthEntry],
    messiness: BTreeMap<&'a str, &'a BTreeMap<String, u64>>,
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, SynthError>>) -> Result<T, SynthError> {
    h.join().map_err(|_| SynthError::Thread)?
}

fn remove_partials(dir: &Path) {
    for name in DATASETS
        .iter()
        .map(|d| format!(".{d}.csv.partial"))
        .chain([format!(".{GROUND_TRUTH_FILE}.partial")])
    {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// Generates the reference city into `out_dir` (created if missing; existing files of the
/// same names are replaced). Four threads write the six files; each file has its own
/// ChaCha streams, so the output does not depend on scheduling.
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthSummary, SynthError> {
    let started = Instant::now();
    cfg.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|source| SynthError::CreateDir {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let result = generate_inner(cfg, out_dir, started);
    if result.is_err() {
        remove_partials(out_dir);
    }
    result
}

fn generate_inner(
    cfg: &SynthConfig,
    out_dir: &Path,
    started: Instant,
) -> Result<SynthSummary, SynthError> {
    let pop = people::Population::new(cfg.persons, cfg.seed);
    let cal = dates::Calendar::new(cfg.as_of);
    let plan::Plan {
        roles,
        incidents,
        ledger,
        next_phone,
        alerts,
        near_misses,
    } = plan::build(cfg, &pop)?;
    tracing::info!(
        persons = cfg.persons,
        alerts = alerts.len(),
        near_misses = near_misses.len(),
        "scenarios planned"
    );
    let ctx = Ctx {
        cfg,
        pop: &pop,
        cal: &cal,
        roles: &roles,
        out_dir,
    };
    let outs: Vec<FileOut> = std::thread::scope(|s| {
        let ctx = &ctx;
        let incidents = &incidents;
        let police = s.spawn(move || {
            let inc = police::incidents(ctx, incidents, ledger, next_phone)?;
            let [wanted, registry] = police::watchlists(ctx)?;
            Ok([inc, wanted, registry])
        });
        let visits = s.spawn(move || medical::visits(ctx));
        let claims = s.spawn(move || medical::claims(ctx));
        let tax = s.spawn(move || tax::employment(ctx));
        let [inc, wanted, registry] = join(police)?;
        Ok::<_, SynthError>(vec![
            inc,
            wanted,
            registry,
            join(visits)?,
            join(claims)?,
            join(tax)?,
        ])
    })?;

    let mut planted: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for e in &alerts {
        *planted
            .entry(e.model.to_owned())
            .or_default()
            .entry(e.tier.unwrap_or("near_miss").to_owned())
            .or_default() += 1;
    }
    for e in &near_misses {
        *planted
            .entry(e.model.to_owned())
            .or_default()
            .entry("near_miss".to_owned())
            .or_default() += 1;
    }
    let truth = GroundTruth {
        generator: format!("blindwatch-synth {}", env!("CARGO_PKG_VERSION")),
        as_of: cfg.as_of.format("%Y-%m-%d").to_string(),
        seed: cfg.seed,
        persons: cfg.persons,
        messy_rate: cfg.messy_rate,
        window: Window {
            first_day: cal.date(dates::WINDOW - 1).to_owned(),
            last_day: cal.date(0).to_owned(),
            days: dates::WINDOW,
        },
        rates: Rates {
            incidents_per_person_year: police::INCIDENTS_PER_PERSON,
            incident_category_weights: vocab::Category::ALL
                .iter()
                .map(|c| c.as_str())
                .zip(police::CATEGORY_WEIGHTS)
                .collect(),
            hospital_visits_per_person_year: medical::VISITS_PER_PERSON,
            insurance_claims_per_person_year: medical::CLAIMS_PER_PERSON,
            wanted_share: plan::WANTED_RATE,
            mental_health_registry_share: plan::REGISTERED_RATE,
            employment_record_share_of_ages_18_to_65: tax::WORKING_AGE_RECORD_RATE,
            planted_per_model_tier: plan::per_tier(cfg.persons),
        },
        files: outs
            .iter()
            .map(|o| {
                (
                    o.summary.dataset.as_str(),
                    FileEntry {
                        summary: &o.summary,
                        messy_rows: o.messy_rows,
                    },
                )
            })
            .collect(),
        stations: &STATIONS,
        planted: &planted,
        alerts: &alerts,
        near_misses: &near_misses,
        messiness: outs
            .iter()
            .map(|o| (o.summary.dataset.as_str(), &o.mess))
            .collect(),
    };
    let mut json = serde_json::to_vec_pretty(&truth)?;
    json.push(b'\n');
    let path = out_dir.join(GROUND_TRUTH_FILE);
    let tmp = out_dir.join(format!(".{GROUND_TRUTH_FILE}.partial"));
    let write_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SynthError::Write { path: p, source }
    };
    std::fs::write(&tmp, &json).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(write_err(&path))?;

    let summary = SynthSummary {
        out_dir: out_dir.to_path_buf(),
        messy_rows: outs.iter().map(|o| o.messy_rows).sum(),
        files: outs.into_iter().map(|o| o.summary).collect(),
        ground_truth: path,
        planted,
        alerts: alerts.len(),
        near_misses: near_misses.len(),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        elapsed_ms = summary.elapsed.as_millis() as u64,
        "reference city written"
    );
    Ok(summary)
}
