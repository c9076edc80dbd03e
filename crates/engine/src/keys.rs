//! Column keys released per plan.
//!
//! Each run (one execution of one checked plan) registers its own [`RunFactory`] in a fresh
//! DataFusion runtime. For every file DataFusion opens, the factory hands out decryption
//! properties backed by a [`ContributionKeys`] retriever that releases the footer key and the
//! keys of the columns the plan reads from that file's table — and refuses every other, so a
//! plan cannot decrypt a column it was not cleared for, whatever DataFusion asks for. The
//! factory only serves files of the plan's tables that passed the integrity check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;
use async_trait::async_trait;
use blindwatch_crypto::sealing::{FOOTER, PlatformKeyRetriever, Release};
use blindwatch_crypto::wrap::{PlatformPrivateKey, WrappedKey};
use datafusion::common::DataFusionError;
use datafusion::config::EncryptionFactoryOptions;
use datafusion::execution::parquet_encryption::EncryptionFactory;
use object_store::path::Path as ObjectPath;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;

use crate::tables::StoredFile;

/// Why a key was not handed out, with the contribution it belongs to. Travels inside
/// parquet's and DataFusion's errors and is turned into an [`crate::EngineError`].
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KeyProblem {
    #[error("the key of column `{column}` of {table} is not released for this plan")]
    NotReleased {
        table: String,
        column: String,
        sequence: u64,
        file: String,
    },
    #[error("a column key of {table} contribution {sequence} does not open: {reason}")]
    Unwrap {
        table: String,
        sequence: u64,
        file: String,
        reason: String,
    },
    #[error("refusing to decrypt a file that is not a checked contribution of the plan's tables")]
    UnknownFile,
}

/// The key retriever of one contribution file in one run.
struct ContributionKeys {
    inner: Arc<PlatformKeyRetriever>,
    released: Arc<BTreeSet<String>>,
    file: Arc<StoredFile>,
}

impl KeyRetriever for ContributionKeys {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        if let Ok(wrapped) = WrappedKey::from_metadata(key_metadata)
            && wrapped.col != FOOTER
            && !self.released.contains(&wrapped.col)
        {
            return Err(ParquetError::External(Box::new(KeyProblem::NotReleased {
                table: self.file.table.clone(),
                column: wrapped.col,
                sequence: self.file.sequence,
                file: self.file.file.clone(),
            })));
        }
        // The platform retriever checks the release again, unwraps and caches.
        self.inner.retrieve_key(key_metadata).map_err(|e| {
            let reason = self
                .inner
                .take_failure()
                .map(|f| f.to_string())
                .unwrap_or_else(|| e.to_string());
            ParquetError::External(Box::new(KeyProblem::Unwrap {
                table: self.file.table.clone(),
                sequence: self.file.sequence,
                file: self.file.file.clone(),
                reason,
            }))
        })
    }
}

/// The encryption factory of one run.
pub(crate) struct RunFactory {
    files: HashMap<ObjectPath, Arc<StoredFile>>,
    /// Per table: its retriever (key cache for the run) and released columns.
    tables: BTreeMap<String, (Arc<PlatformKeyRetriever>, Arc<BTreeSet<String>>)>,
    opened: Mutex<BTreeSet<(String, u64, String)>>,
}

impl fmt::Debug for RunFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunFactory")
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

impl RunFactory {
    /// `files`: the checked contributions the run may read; `release`: per table, the
    /// columns whose keys are released.
    pub fn new(
        key: &Arc<PlatformPrivateKey>,
        files: impl IntoIterator<Item = Arc<StoredFile>>,
        release: &BTreeMap<String, BTreeSet<String>>,
    ) -> RunFactory {
        let tables = release
            .iter()
            .map(|(t, cols)| {
                let retriever = PlatformKeyRetriever::new(key.clone(), Release::Only(cols.clone()));
                (t.clone(), (retriever, Arc::new(cols.clone())))
            })
            .collect();
        RunFactory {
            files: files
                .into_iter()
                .map(|f| (f.object_path.clone(), f))
                .collect(),
            tables,
            opened: Mutex::default(),
        }
    }

    /// The contributions whose decryption properties were handed out, as `table #seq (file)`.
    pub fn opened(&self) -> Vec<String> {
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(t, s, f)| format!("{t} contribution {s} ({f})"))
            .collect()
    }
}

#[async_trait]
impl EncryptionFactory for RunFactory {
    async fn get_file_encryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        _schema: &SchemaRef,
        _file_path: &ObjectPath,
    ) -> datafusion::common::Result<Option<Arc<FileEncryptionProperties>>> {
        Err(DataFusionError::Plan(
            "the evaluation engine never writes sealed files".into(),
        ))
    }

    async fn get_file_decryption_properties(
        &self,
        _config: &EncryptionFactoryOptions,
        file_path: &ObjectPath,
    ) -> datafusion::common::Result<Option<Arc<FileDecryptionProperties>>> {
        let file = self
            .files
            .get(file_path)
            .ok_or_else(|| DataFusionError::External(Box::new(KeyProblem::UnknownFile)))?;
        let (inner, released) = self
            .tables
            .get(&file.table)
            .ok_or_else(|| DataFusionError::External(Box::new(KeyProblem::UnknownFile)))?;
        if let Ok(mut o) = self.opened.lock() {
            o.insert((file.table.clone(), file.sequence, file.file.clone()));
        }
        let retriever = ContributionKeys {
            inner: inner.clone(),
            released: released.clone(),
            file: file.clone(),
        };
        let props = FileDecryptionProperties::with_key_retriever(Arc::new(retriever)).build()?;
        Ok(Some(props))
    }
}
