//! The engine's errors. Each says what was wrong and what to do; none prints a token, an
//! identifier or an attribute value (DataFusion's own execution messages can quote values,
//! so they are withheld).

use std::path::PathBuf;

use blindwatch_contract::ContractError;
use blindwatch_crypto::keys::KeyError;
use blindwatch_store::CatalogError;

use crate::analysis::AnalysisError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "cannot load the platform key: {0}; run `blindwatch keys init --data-dir DIR` or restore keys/platform.key"
    )]
    Key(Box<KeyError>),
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    #[error(transparent)]
    Contract(Box<ContractError>),
    #[error(
        "the data directory {0} has `*`, `?` or `[` in its path, which the query engine would read as a pattern: move it to a plain path"
    )]
    DataDirPath(PathBuf),
    #[error("the query cannot be planned: {0}")]
    Plan(String),
    #[error(transparent)]
    Analysis(#[from] AnalysisError),
    #[error(
        "the query reads `{0}`, which is not a sealed dataset: name tables as <partner>.<dataset>, as in policies/datasets"
    )]
    UnknownTable(String),
    #[error("dataset {table} cannot be queried: {reason}")]
    TableUnavailable { table: String, reason: String },
    #[error("this plan was made by another engine instance: plan the query again with this engine")]
    ForeignPlan,
    #[error(
        "integrity check failed for {table} contribution {sequence} ({file}): {what}. The query was refused \
         before anything was decrypted; the stored package was altered or damaged — restore it from the partner's \
         package and check the storage"
    )]
    Integrity {
        table: String,
        sequence: u64,
        file: String,
        what: String,
    },
    #[error(
        "the query reads column `{column}` of {table}, but that column's key is not released for this plan \
         (contribution {sequence}, {file}); nothing of the column was decrypted — plan the query again so the \
         column is checked and released"
    )]
    NotReleased {
        table: String,
        column: String,
        sequence: u64,
        file: String,
    },
    #[error(
        "the column keys of {table} contribution {sequence} ({file}) do not open: {reason}; check that the engine \
         runs with this platform's key and that the package was sealed to it"
    )]
    Keys {
        table: String,
        sequence: u64,
        file: String,
        reason: String,
    },
    #[error(
        "decrypting or decoding the sealed data of {contributions} failed (an authentication tag did not verify or \
         the file is malformed) although its hash matches the signed manifest: the partner sealed a damaged \
         package; ask them to seal it again"
    )]
    Decrypt { contributions: String },
    #[error(
        "query execution failed ({kind}); the detailed message is withheld because it may quote data values — check casts and arithmetic in the query"
    )]
    Execution { kind: String },
    #[error("query execution failed: {0}")]
    Resources(String),
}

impl From<KeyError> for EngineError {
    fn from(e: KeyError) -> Self {
        EngineError::Key(Box::new(e))
    }
}

impl From<CatalogError> for EngineError {
    fn from(e: CatalogError) -> Self {
        EngineError::Catalog(Box::new(e))
    }
}

impl From<ContractError> for EngineError {
    fn from(e: ContractError) -> Self {
        EngineError::Contract(Box::new(e))
    }
}
