//! Generates the reference city and prints what was written.
//!
//! ```text
//! cargo run --release -p blindwatch-synth --example generate -- [PERSONS] [OUT_DIR] [SEED] [AS_OF]
//! ```
//! Defaults: 1,000,000 persons, `target/synth-city`, seed 42, as_of 2025-06-30.

use std::error::Error;
use std::path::PathBuf;

use blindwatch_synth::{SynthConfig, generate};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let persons: u64 = args
        .next()
        .map_or(Ok(1_000_000), |a| a.replace('_', "").parse())?;
    let out: PathBuf = args
        .next()
        .map_or_else(|| "target/synth-city".into(), PathBuf::from);
    let seed: u64 = args.next().map_or(Ok(42), |a| a.parse())?;
    let as_of = args.next().map_or(
        Ok(chrono::NaiveDate::from_ymd_opt(2025, 6, 30).ok_or("bad default date")?),
        |a| chrono::NaiveDate::parse_from_str(&a, "%Y-%m-%d"),
    )?;
    let cfg = SynthConfig::new(persons, seed, as_of);
    let summary = generate(&cfg, &out)?;
    print!("{summary}");
    Ok(())
}
