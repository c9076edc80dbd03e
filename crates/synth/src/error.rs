//! Errors of the generator. Messages say what was wrong and what to do; none carries an
//! identifier value.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(
        "persons = {got} is out of range: use {min} to {max} (the planted scenarios need at least {min} residents to draw subjects from)"
    )]
    Persons { got: u64, min: u64, max: u64 },

    #[error("messy_rate = {0} is out of range: use a fraction from 0 to 0.5 (default 0.02)")]
    MessyRate(f64),

    #[error(
        "as_of = {0} is too early: residents are born 1940–2008, so use a date from 2009-01-01 to 2099-12-31"
    )]
    AsOf(chrono::NaiveDate),

    #[error(
        "cannot create the output directory {path}: {source}; check the path and its permissions"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "cannot write {path}: {source}; check free disk space and permissions of the output directory"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{file}: character U+{code:04X} has no GBK encoding; this is a generator bug, please report it"
    )]
    Unencodable { file: String, code: u32 },

    #[error(
        "could not plant the {model} scenarios after many attempts: the population is too small or too crowded; generate more persons"
    )]
    Planting { model: &'static str },

    #[error(
        "a generator thread stopped unexpectedly; this is a bug, please report it with the config used"
    )]
    Thread,

    #[error("cannot serialise ground_truth.json: {0}")]
    Json(#[from] serde_json::Error),
}
