//! The evaluation engine: DataFusion over the sealed tables, decrypting on read, with column
//! keys released per checked plan.
//!
//! - Every contract is a table `<partner>.<dataset>` (schema = partner) over its current
//!   contributions — all of them for an append contract, the latest for a replace contract —
//!   with the schema the contract declares (never inferred from a file).
//! - [`Engine::plan`] turns SQL into a [`CheckedPlan`]: the logical plan, its
//!   [`PlanAnalysis`] (how every base column is used, and the lineage of every output), and
//!   the exact set of columns it reads. Plans that join or mix tokens of different token
//!   modes or keys, or that read a table whose current contributions disagree on the token
//!   key, are refused here.
//! - [`Engine::execute`] first checks the SHA-256 of every contribution file the plan may read
//!   against the catalog and the stored signed manifest (once per file per engine), then runs
//!   the plan in a fresh DataFusion session whose encryption factory releases the footer key
//!   and the keys of exactly the plan's columns; every other column key is refused, so even a
//!   plan altered after the checks cannot decrypt a column it was not cleared for.
//!
//! Privacy: nothing here logs or prints a token, an identifier or a value. DataFusion's own
//! execution errors can quote values, so they are reduced to their kind.

pub mod analysis;
mod error;
mod integrity;
mod keys;
mod plan;
mod tables;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use blindwatch_contract::ContractSet;
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_store::{Catalog, DataDir};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{DataFusionError, TableReference};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use futures::{Stream, StreamExt};

pub use analysis::{
    AnalysisError, ColumnRef, ColumnUse, MixedTokens, OutputColumn, PlanAnalysis, TokenDomain,
};
pub use error::EngineError;
pub use plan::{CheckedPlan, ContributionRef};
pub use tables::TableInfo;

use integrity::IntegrityCache;
use keys::{KeyProblem, RunFactory};
use tables::{FACTORY_ID, SealedTable, StoredFile};

/// A stream of result batches.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch, EngineError>> + Send>>;

static NEXT_ENGINE: AtomicU64 = AtomicU64::new(1);

/// The tables as of one load of the catalog, and the session that plans over them.
pub(crate) struct Snapshot {
    pub(crate) tables: BTreeMap<String, SealedTable>,
    /// Tables with data but no contract, with the reason they cannot be read.
    orphans: BTreeMap<String, String>,
    planner: SessionContext,
}

/// The evaluation engine over one platform data directory. A clone is cheap and shares the
/// tables' snapshot and the integrity cache (a file already verified is not hashed again).
#[derive(Clone)]
pub struct Engine {
    id: u64,
    root: PathBuf,
    key: Arc<PlatformPrivateKey>,
    catalog: Catalog,
    contracts: ContractSet,
    snapshot: Arc<Snapshot>,
    integrity: Arc<IntegrityCache>,
    /// The time `now()` and `current_date` mean in executions (None: the real time).
    clock: Option<chrono::DateTime<chrono::Utc>>,
    /// DataFusion's memory pool per execution, bytes (None: unbounded). An execution that
    /// needs more fails with `EngineError::Resources` instead of exhausting the machine.
    memory_limit: Option<usize>,
    /// What the snapshot was loaded from: the catalog's version and the contract files.
    sources: Sources,
}

/// What an engine's tables depend on; a change means the snapshot must be loaded again.
#[derive(Clone, PartialEq, Eq)]
struct Sources {
    catalog: (i64, i64),
    contracts: Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)>,
}

impl Sources {
    async fn read(root: &std::path::Path, catalog: &Catalog) -> Result<Sources, EngineError> {
        let catalog = catalog.version().await?;
        let dir = DataDir::new(root.to_owned()).contracts_dir();
        // An unreadable folder reads as empty, which differs from what was loaded: the
        // refresh then loads the contracts, and that says what is wrong.
        let mut contracts: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| {
                let meta = entry.metadata().ok();
                (
                    entry.file_name(),
                    meta.as_ref().map_or(0, std::fs::Metadata::len),
                    meta.and_then(|m| m.modified().ok()),
                )
            })
            .collect();
        contracts.sort();
        Ok(Sources { catalog, contracts })
    }
}

fn session_config() -> SessionConfig {
    let mut config = SessionConfig::new().with_information_schema(false);
    config.options_mut().execution.parquet.enable_page_index = false;
    config
}

impl Engine {
    /// Opens the engine over a data directory: its platform key, catalog and contracts
    /// (`policies/datasets`).
    pub async fn open(data_dir: &DataDir) -> Result<Engine, EngineError> {
        let key = Arc::new(PlatformPrivateKey::read(&data_dir.platform_private_key())?);
        let catalog = Catalog::open(&data_dir.catalog_path(), false).await?;
        let contracts = ContractSet::load_dir(&data_dir.contracts_dir())?;
        Engine::from_parts(data_dir, key, catalog, contracts).await
    }

    /// An engine from parts the caller already holds.
    pub async fn from_parts(
        data_dir: &DataDir,
        key: Arc<PlatformPrivateKey>,
        catalog: Catalog,
        contracts: ContractSet,
    ) -> Result<Engine, EngineError> {
        let root =
            std::path::absolute(data_dir.root()).unwrap_or_else(|_| data_dir.root().to_owned());
        let sources = Sources::read(&root, &catalog).await?;
        let snapshot = Arc::new(load_snapshot(&root, &catalog, &contracts).await?);
        Ok(Engine {
            id: NEXT_ENGINE.fetch_add(1, Ordering::Relaxed),
            root,
            key,
            catalog,
            contracts,
            snapshot,
            integrity: Arc::default(),
            clock: None,
            memory_limit: None,
            sources,
        })
    }

    /// Loads the contracts and tables again if a contribution was accepted, a token
    /// generation started or a contract file changed since they were loaded (by this
    /// process or another); says whether it did. File hashes already checked stay cached.
    pub async fn refresh_if_changed(&mut self) -> Result<bool, EngineError> {
        let sources = Sources::read(&self.root, &self.catalog).await?;
        if sources == self.sources {
            return Ok(false);
        }
        let dir = DataDir::new(self.root.clone());
        self.contracts = ContractSet::load_dir(&dir.contracts_dir())?;
        self.snapshot = Arc::new(load_snapshot(&self.root, &self.catalog, &self.contracts).await?);
        self.sources = sources;
        Ok(true)
    }

    /// Reads the catalog again (new contributions). Plans made before keep reading what they
    /// were planned over; file hashes already checked stay cached.
    pub async fn refresh(&mut self) -> Result<(), EngineError> {
        self.snapshot = Arc::new(load_snapshot(&self.root, &self.catalog, &self.contracts).await?);
        Ok(())
    }

    /// Fixes what `now()` and `current_date` mean in later executions, so a run can be
    /// evaluated as of a given day (a replay, a model test, a synthetic city); `None`
    /// restores the real time.
    pub fn set_clock(&mut self, now: Option<chrono::DateTime<chrono::Utc>>) {
        self.clock = now;
    }

    /// Bounds DataFusion's memory pool for each later execution (`None`: unbounded); an
    /// execution that needs more is refused, not the process.
    pub fn set_memory_limit(&mut self, bytes: Option<usize>) {
        self.memory_limit = bytes;
    }

    pub fn contracts(&self) -> &ContractSet {
        &self.contracts
    }

    /// The catalog this engine reads (the query gate keeps its budget ledger there).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every table, with its current contributions and token domain.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.snapshot
            .tables
            .values()
            .map(SealedTable::info)
            .collect()
    }

    /// Plans `sql`, analyses the plan and refuses token joins across token keys.
    pub async fn plan(&self, sql: &str) -> Result<CheckedPlan, EngineError> {
        let snapshot = self.snapshot.clone();
        let state = snapshot.planner.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(plan_error)?;
        match &statement {
            DfStatement::Statement(s) if matches!(**s, SqlStatement::Query(_)) => {}
            _ => return Err(AnalysisError::NotAQuery("this statement".into()).into()),
        }
        for r in state
            .resolve_table_references(&statement)
            .map_err(plan_error)?
        {
            snapshot.check_table(&table_name(&r))?;
        }
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(plan_error)?;
        plan::check(self.id, snapshot, plan)
    }

    /// Checks the stored files of every contribution of `table` against the catalog and
    /// their signed manifests.
    pub async fn verify_table(&self, table: &str) -> Result<(), EngineError> {
        let t = self
            .snapshot
            .tables
            .get(table)
            .ok_or_else(|| EngineError::UnknownTable(table.to_owned()))?;
        self.verify(t.files.clone()).await
    }

    async fn verify(&self, files: Vec<Arc<StoredFile>>) -> Result<(), EngineError> {
        let integrity = self.integrity.clone();
        tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| integrity.verify(f)))
            .await
            .map_err(|e| EngineError::Execution {
                kind: format!("integrity check task failed: {e}"),
            })?
    }

    /// Checks integrity and builds the session one execution of `plan` runs in.
    async fn prepare(
        &self,
        plan: &CheckedPlan,
    ) -> Result<(SessionContext, Arc<RunFactory>), EngineError> {
        if plan.engine() != self.id {
            return Err(EngineError::ForeignPlan);
        }
        let files: Vec<Arc<StoredFile>> = plan.files().cloned().collect();
        self.verify(files.clone()).await?;
        let factory = Arc::new(RunFactory::new(&self.key, files, plan.released()));
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = self.memory_limit {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime
            .build_arc()
            .map_err(|e| EngineError::Resources(e.to_string()))?;
        runtime.register_parquet_encryption_factory(FACTORY_ID, factory.clone());
        Ok((
            SessionContext::new_with_config_rt(session_config(), runtime),
            factory,
        ))
    }

    /// The plan as a DataFrame of the run's session, under `clock` (None: the real time).
    fn dataframe(
        ctx: &SessionContext,
        plan: &CheckedPlan,
        clock: Option<chrono::DateTime<chrono::Utc>>,
    ) -> DataFrame {
        let mut state = ctx.state();
        if let Some(now) = clock {
            state.execution_props_mut().query_execution_start_time = Some(now);
        }
        DataFrame::new(state, plan.logical_plan().clone())
    }

    /// Executes a checked plan under the engine's clock and collects its result.
    pub async fn execute(&self, plan: &CheckedPlan) -> Result<Vec<RecordBatch>, EngineError> {
        self.execute_at(plan, self.clock).await
    }

    /// Executes a checked plan as of `now` (what `now()` and `current_date` mean; None: the
    /// real time), whatever the engine's clock: one engine can serve runs of different days.
    pub async fn execute_at(
        &self,
        plan: &CheckedPlan,
        now: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<RecordBatch>, EngineError> {
        let started = std::time::Instant::now();
        let (ctx, factory) = self.prepare(plan).await?;
        let run = async { Self::dataframe(&ctx, plan, now).collect().await };
        let batches = run.await.map_err(|e| execution_error(&e, &factory))?;
        tracing::debug!(
            tables = ?plan.released().keys().collect::<Vec<_>>(),
            columns_released = plan.released().values().map(BTreeSet::len).sum::<usize>(),
            rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "plan executed"
        );
        Ok(batches)
    }

    /// Executes a checked plan as a stream of batches.
    pub async fn execute_stream(&self, plan: &CheckedPlan) -> Result<BatchStream, EngineError> {
        let (ctx, factory) = self.prepare(plan).await?;
        let run = async {
            Self::dataframe(&ctx, plan, self.clock)
                .execute_stream()
                .await
        };
        let stream = run.await.map_err(|e| execution_error(&e, &factory))?;
        Ok(Box::pin(stream.map(move |r| {
            r.map_err(|e| execution_error(&e, &factory))
        })))
    }
}

async fn load_snapshot(
    root: &std::path::Path,
    catalog: &Catalog,
    contracts: &ContractSet,
) -> Result<Snapshot, EngineError> {
    let (tables, orphans) = tables::load_tables(root, catalog, contracts).await?;
    let planner = SessionContext::new_with_config(session_config());
    let catalog_provider = planner
        .catalog("datafusion")
        .ok_or_else(|| EngineError::Plan("the query session has no default catalog".into()))?;
    let mut schemas: BTreeMap<String, Arc<MemorySchemaProvider>> = BTreeMap::new();
    for t in tables.values() {
        let Some((partner, dataset)) = t.name.split_once('.') else {
            continue;
        };
        let schema = schemas.entry(partner.to_owned()).or_insert_with(|| {
            let s = Arc::new(MemorySchemaProvider::new());
            let _ = catalog_provider.register_schema(partner, s.clone());
            s
        });
        schema
            .register_table(dataset.to_owned(), t.provider.clone())
            .map_err(plan_error)?;
    }
    Ok(Snapshot {
        tables,
        orphans,
        planner,
    })
}

impl Snapshot {
    pub(crate) fn token_domain(&self, c: &ColumnRef) -> Option<TokenDomain> {
        let t = self.tables.get(&c.table)?;
        t.token_columns
            .contains(&c.column)
            .then(|| t.token_domain.clone())
            .flatten()
    }

    pub(crate) fn check_table(&self, name: &str) -> Result<(), EngineError> {
        if let Some(reason) = self.orphans.get(name) {
            return Err(EngineError::TableUnavailable {
                table: name.to_owned(),
                reason: reason.clone(),
            });
        }
        match self.tables.get(name) {
            None => Err(EngineError::UnknownTable(name.to_owned())),
            Some(SealedTable {
                problem: Some(reason),
                ..
            }) => Err(EngineError::TableUnavailable {
                table: name.to_owned(),
                reason: reason.clone(),
            }),
            Some(_) => Ok(()),
        }
    }
}

/// `<partner>.<dataset>` of a table reference (as written, for messages when it is not one).
fn table_name(r: &TableReference) -> String {
    match (r.catalog(), r.schema()) {
        (None | Some("datafusion"), Some(schema)) => format!("{schema}.{}", r.table()),
        _ => r.to_string(),
    }
}

fn plan_error(e: DataFusionError) -> EngineError {
    EngineError::Plan(e.strip_backtrace())
}

/// Turns an execution error into one that names the dataset and contribution when the cause
/// is a key or decryption failure, and withholds DataFusion's text otherwise (it can quote
/// values).
fn execution_error(e: &DataFusionError, factory: &RunFactory) -> EngineError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut parquet = false;
    while let Some(err) = cur {
        if let Some(k) = err.downcast_ref::<KeyProblem>() {
            return match k.clone() {
                KeyProblem::NotReleased {
                    table,
                    column,
                    sequence,
                    file,
                } => EngineError::NotReleased {
                    table,
                    column,
                    sequence,
                    file,
                },
                KeyProblem::Unwrap {
                    table,
                    sequence,
                    file,
                    reason,
                } => EngineError::Keys {
                    table,
                    sequence,
                    file,
                    reason,
                },
                KeyProblem::UnknownFile => EngineError::Execution {
                    kind: k.to_string(),
                },
            };
        }
        parquet |= err.is::<parquet::errors::ParquetError>()
            || matches!(
                err.downcast_ref::<arrow_schema::ArrowError>(),
                Some(arrow_schema::ArrowError::ParquetError(_))
            );
        cur = err.source();
    }
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(m) => EngineError::Resources(m.clone()),
        _ if parquet || matches!(root, DataFusionError::ParquetError(_)) => {
            let opened = factory.opened();
            EngineError::Decrypt {
                contributions: if opened.is_empty() {
                    "the plan's tables".into()
                } else {
                    opened.join(", ")
                },
            }
        }
        other => EngineError::Execution {
            kind: error_kind(other).into(),
        },
    }
}

fn error_kind(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::ArrowError(..) => "arrow computation error",
        DataFusionError::Execution(_) => "execution error",
        DataFusionError::Plan(_) => "planning error",
        DataFusionError::SchemaError(..) => "schema error",
        DataFusionError::NotImplemented(_) => "not implemented",
        DataFusionError::Internal(_) => "internal error",
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => "storage error",
        _ => "error",
    }
}
