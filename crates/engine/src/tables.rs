//! The sealed tables: one per contract, over its current contributions.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use blindwatch_contract::{Contract, ContractSet, Mode};
use blindwatch_crypto::manifest::{SealedContent, schema_digest};
use blindwatch_store::{Catalog, Contribution};
use datafusion::catalog::TableProvider;
use datafusion::config::{ParquetOptions, TableParquetOptions};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use object_store::path::Path as ObjectPath;

use crate::EngineError;
use crate::analysis::TokenDomain;

/// The id under which each run registers its encryption factory.
pub(crate) const FACTORY_ID: &str = "blindwatch.sealed";

/// One stored contribution file the engine may read.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub table: String,
    pub sequence: u64,
    /// Relative to the data directory, for messages.
    pub file: String,
    pub path: PathBuf,
    pub manifest_file: String,
    pub manifest_path: PathBuf,
    pub catalog_sha256: String,
    /// How DataFusion's object store names the file.
    pub object_path: ObjectPath,
}

/// A sealed table as the engine sees it.
pub(crate) struct SealedTable {
    pub name: String,
    pub mode: Mode,
    pub schema: SchemaRef,
    /// Current contributions: all for an append contract, the latest for a replace contract.
    pub files: Vec<Arc<StoredFile>>,
    pub token_columns: BTreeSet<String>,
    pub token_domain: Option<TokenDomain>,
    /// Why the table cannot be queried, if it cannot.
    pub problem: Option<String>,
    pub provider: Arc<dyn TableProvider>,
}

/// Public description of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// `<partner>.<dataset>`.
    pub name: String,
    pub mode: Mode,
    /// Sequence numbers of the contributions a query reads.
    pub current_sequences: Vec<u64>,
    /// Columns of the sealed table, in order.
    pub columns: Vec<String>,
    /// Columns holding tokens.
    pub token_columns: BTreeSet<String>,
    /// The token mode and key of its contributions (none before the first contribution).
    pub token_domain: Option<TokenDomain>,
    /// Why the table cannot be queried, if it cannot.
    pub problem: Option<String>,
}

impl SealedTable {
    pub fn info(&self) -> TableInfo {
        TableInfo {
            name: self.name.clone(),
            mode: self.mode,
            current_sequences: self.files.iter().map(|f| f.sequence).collect(),
            columns: self
                .schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            token_columns: self.token_columns.clone(),
            token_domain: self.token_domain.clone(),
            problem: self.problem.clone(),
        }
    }
}

/// The schema of the sealed file, from the contract (never inferred from a file).
pub(crate) fn contract_schema(contract: &Contract) -> Result<SchemaRef, String> {
    Ok(contract.sealed_schema())
}

/// Parquet reading options for sealed files: decrypt through the run's factory, and never
/// read the page index (it is decrypted for every column, including unreleased ones).
pub(crate) fn parquet_options() -> TableParquetOptions {
    let mut options = TableParquetOptions {
        global: ParquetOptions::default(),
        ..Default::default()
    };
    options.global.enable_page_index = false;
    options.crypto.factory_id = Some(FACTORY_ID.to_owned());
    options
}

fn has_glob(path: &Path) -> bool {
    path.to_string_lossy()
        .chars()
        .any(|c| matches!(c, '*' | '?' | '['))
}

fn stored_file(root: &Path, c: &Contribution) -> Result<StoredFile, EngineError> {
    let path = root.join(&c.file_path);
    if has_glob(&path) {
        return Err(EngineError::DataDirPath(root.to_owned()));
    }
    let url = ListingTableUrl::parse(path.to_string_lossy())
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    Ok(StoredFile {
        table: c.table.clone(),
        sequence: c.sequence,
        file: c.file_path.clone(),
        path,
        manifest_file: c.manifest_path.clone(),
        manifest_path: root.join(&c.manifest_path),
        catalog_sha256: c.file_sha256.clone(),
        object_path: url.prefix().clone(),
    })
}

fn listing_table(
    schema: &SchemaRef,
    files: &[Arc<StoredFile>],
) -> Result<Arc<dyn TableProvider>, EngineError> {
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(f.path.to_string_lossy()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Plan(e.to_string()))?;
    let format = ParquetFormat::default().with_options(parquet_options());
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema.clone());
    let table = ListingTable::try_new(config).map_err(|e| EngineError::Plan(e.to_string()))?;
    Ok(Arc::new(table))
}

/// Builds every table: one per contract, over the catalog's current contributions.
pub(crate) async fn load_tables(
    root: &Path,
    catalog: &Catalog,
    contracts: &ContractSet,
) -> Result<(BTreeMap<String, SealedTable>, BTreeMap<String, String>), EngineError> {
    let mut tables = BTreeMap::new();
    for contract in contracts.iter() {
        let name = contract.table_name();
        let all = catalog.contributions(&name).await?;
        let current: Vec<Contribution> = match contract.mode {
            Mode::Append => all,
            Mode::Replace => all.into_iter().last().into_iter().collect(),
        };
        let mut problem = None;
        let schema = match contract_schema(contract) {
            Ok(s) => s,
            Err(why) => {
                problem = Some(why);
                Arc::new(Schema::empty())
            }
        };
        let token_columns: BTreeSet<String> = contract
            .sealed_columns()
            .into_iter()
            .filter(|c| matches!(c.content, SealedContent::Token { .. }))
            .map(|c| c.name)
            .collect();
        let digest = schema_digest(&contract.sealed_columns());
        let mut files = Vec::new();
        for c in &current {
            if problem.is_none() && c.schema_digest != digest {
                problem = Some(format!(
                    "contribution {} was sealed with columns that differ from the current contract; \
                     ask the partner to seal it again under the current contract",
                    c.sequence
                ));
            }
            files.push(Arc::new(stored_file(root, c)?));
        }
        let domains: BTreeSet<TokenDomain> = current
            .iter()
            .map(|c| TokenDomain {
                mode: c.token_mode.clone(),
                key_id: c.token_key_id.clone(),
            })
            .collect();
        let token_domain = match domains.len() {
            0 => None,
            1 => domains.into_iter().next(),
            n => {
                problem.get_or_insert_with(|| {
                    let list: Vec<String> = domains.iter().map(ToString::to_string).collect();
                    format!(
                        "its current contributions were tokenised under {n} different token keys ({}); tokens under \
                         different keys never match — ask the partner to seal all contributions under one key",
                        list.join(", ")
                    )
                });
                None
            }
        };
        let provider: Arc<dyn TableProvider> = if problem.is_some() || files.is_empty() {
            Arc::new(EmptyTable::new(schema.clone()))
        } else {
            listing_table(&schema, &files)?
        };
        tables.insert(
            name.clone(),
            SealedTable {
                name,
                mode: contract.mode,
                schema,
                files,
                token_columns,
                token_domain,
                problem,
                provider,
            },
        );
    }
    // Data without a contract cannot be read: there is no schema to read it with.
    let mut orphans = BTreeMap::new();
    for t in catalog.tables().await? {
        if !tables.contains_key(&t) {
            orphans.insert(
                t.clone(),
                format!("it has contributions but no contract: add policies/datasets/{t}.toml"),
            );
        }
    }
    Ok((tables, orphans))
}
