//! Parquet modular encryption for sealed contributions.
//!
//! Sealing: every column gets a fresh random AES-256 data key, and so does the footer; each
//! key is HPKE-wrapped to the platform key and stored as that column's key metadata
//! ([`crate::wrap::WrappedKey`]). Reading: a [`PlatformKeyRetriever`] unwraps keys on
//! demand — only for the columns it has been told to release — and caches them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use zeroize::Zeroizing;

use crate::wrap::{self, PlatformPrivateKey, PlatformPublicKey, WrapError, WrappedKey};

/// The name under which the footer key is wrapped.
pub const FOOTER: &str = "";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Wrap(#[from] WrapError),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("parquet refused the encryption settings: {0}")]
    Parquet(#[from] ParquetError),
}

/// Encryption properties that encrypt the footer and every one of `columns`, each under its
/// own fresh data key wrapped to `platform`.
pub fn encryption_properties(
    platform: &PlatformPublicKey,
    columns: &[&str],
) -> Result<Arc<FileEncryptionProperties>, SealError> {
    let footer_key = crate::random_secret::<32>()?;
    let mut builder = FileEncryptionProperties::builder(footer_key.to_vec())
        .with_footer_key_metadata(
            wrap::wrap_key(platform, FOOTER, footer_key.as_ref())?.to_metadata(),
        );
    for column in columns {
        let key = crate::random_secret::<32>()?;
        let wrapped = wrap::wrap_key(platform, column, key.as_ref())?;
        builder = builder.with_column_key_and_metadata(column, key.to_vec(), wrapped.to_metadata());
    }
    Ok(builder.build()?)
}

/// Which column keys a retriever may unwrap.
#[derive(Debug, Clone)]
pub enum Release {
    /// Every column (ingest's check that all keys open).
    All,
    /// Only these columns: the ones a checked plan reads.
    Only(BTreeSet<String>),
}

/// Unwraps column keys for the platform, refusing columns not released.
pub struct PlatformKeyRetriever {
    private: Arc<PlatformPrivateKey>,
    release: Release,
    cache: Mutex<HashMap<Vec<u8>, Zeroizing<Vec<u8>>>>,
    refused: Mutex<BTreeSet<String>>,
    failure: Mutex<Option<WrapError>>,
}

impl PlatformKeyRetriever {
    pub fn new(private: Arc<PlatformPrivateKey>, release: Release) -> Arc<PlatformKeyRetriever> {
        Arc::new(PlatformKeyRetriever {
            private,
            release,
            cache: Mutex::default(),
            refused: Mutex::default(),
            failure: Mutex::default(),
        })
    }

    /// Decryption properties backed by this retriever.
    pub fn decryption_properties(
        self: &Arc<Self>,
    ) -> Result<Arc<FileDecryptionProperties>, SealError> {
        Ok(FileDecryptionProperties::with_key_retriever(self.clone()).build()?)
    }

    /// Columns whose key was asked for and refused.
    pub fn refused_columns(&self) -> BTreeSet<String> {
        self.refused.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The first unwrapping failure (not a refusal), to turn parquet's opaque error into a
    /// clear one.
    pub fn take_failure(&self) -> Option<WrapError> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }

    fn released(&self, column: &str) -> bool {
        column == FOOTER
            || match &self.release {
                Release::All => true,
                Release::Only(cols) => cols.contains(column),
            }
    }

    fn retrieve(&self, metadata: &[u8]) -> Result<Vec<u8>, WrapError> {
        if let Some(key) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(metadata).cloned())
        {
            return Ok(key.to_vec());
        }
        let wrapped = WrappedKey::from_metadata(metadata)?;
        if !self.released(&wrapped.col) {
            if let Ok(mut r) = self.refused.lock() {
                r.insert(wrapped.col.clone());
            }
            return Err(WrapError::Open {
                column: wrapped.col,
            });
        }
        let key = wrap::unwrap_key(&self.private, &wrapped)?;
        let out = key.to_vec();
        if let Ok(mut c) = self.cache.lock() {
            c.insert(metadata.to_vec(), key);
        }
        Ok(out)
    }
}

impl KeyRetriever for PlatformKeyRetriever {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        self.retrieve(key_metadata).map_err(|e| {
            let message = match &e {
                WrapError::Open { column } if !self.released(column) => {
                    format!("the key of column `{column}` is not released for this plan")
                }
                other => other.to_string(),
            };
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert(e);
            }
            ParquetError::General(message)
        })
    }
}
