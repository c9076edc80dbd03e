//! Parquet modular encryption for sealed contributions.
//!
//! Sealing: every column gets a fresh random AES-256 data key, and so does the footer; each
//! key is HPKE-wrapped to the platform key and stored as that column's key metadata
//! ([`crate::wrap::WrappedKey`]). Reading: a [`PlatformKeyRetriever`] unwraps keys on
//! demand — only for the columns it has been told to release — and caches them.
//!
//! Checking: [`check_footer_magic`] and [`check_sealed_layout`] refuse a file that is not
//! sealed this way — a plain Parquet file, a plaintext footer, a column left unencrypted or
//! encrypted under the footer key, a column without its wrapped key or with another
//! column's — whatever its manifest says.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::errors::ParquetError;
use parquet::file::column_crypto_metadata::ColumnCryptoMetaData;
use parquet::file::metadata::{FooterTail, ParquetMetaData};
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
    /// The names the keys it unwrapped were wrapped for ([`FOOTER`] for the footer's).
    opened: Mutex<BTreeSet<String>>,
    failure: Mutex<Option<WrapError>>,
}

impl PlatformKeyRetriever {
    pub fn new(private: Arc<PlatformPrivateKey>, release: Release) -> Arc<PlatformKeyRetriever> {
        Arc::new(PlatformKeyRetriever {
            private,
            release,
            cache: Mutex::default(),
            refused: Mutex::default(),
            opened: Mutex::default(),
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
        // A panic elsewhere while holding the lock does not lose what was recorded.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The names of the keys it has unwrapped: the columns (and [`FOOTER`]) they were
    /// wrapped for.
    pub fn opened_names(&self) -> BTreeSet<String> {
        self.opened
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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
        if let Ok(mut o) = self.opened.lock() {
            o.insert(wrapped.col.clone());
        }
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

/// How a file fails to be sealed the way the partner tool seals. Names the column, never a
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the file is not Parquet (no Parquet magic at its start and end)")]
    NotParquet,
    #[error(
        "the footer is not encrypted (plain Parquet, or modular encryption with a plaintext footer)"
    )]
    PlaintextFooter,
    #[error("column `{0}` is not encrypted")]
    UnencryptedColumn(String),
    #[error("column `{0}` is encrypted under the footer key, not under its own key")]
    FooterKeyColumn(String),
    #[error("column `{0}` carries no wrapped key")]
    MissingKey(String),
    #[error("column `{0}` carries a key wrapped for another column")]
    ForeignKey(String),
    #[error("the file's columns are not the sealed columns")]
    Columns,
    #[error("the footer key is not wrapped as the footer's")]
    FooterKey,
}

/// Checks the first 4 and last 8 bytes of a file: the encrypted-footer magic (`PARE`) at
/// both ends. A plain Parquet file, or one with a plaintext footer, ends in `PAR1`.
pub fn check_footer_magic(head: &[u8; 4], tail: &[u8; 8]) -> Result<(), LayoutError> {
    let footer = FooterTail::try_new(tail).map_err(|_| LayoutError::NotParquet)?;
    match (head, footer.is_encrypted_footer()) {
        (b"PARE", true) => Ok(()),
        (b"PAR1", false) => Err(LayoutError::PlaintextFooter),
        _ => Err(LayoutError::NotParquet),
    }
}

/// Checks, in every row group, that each of `columns` (in order, the whole file schema) is
/// encrypted under its own key whose metadata is a key wrapped for that column, and — once
/// `retriever` has read the footer — that the footer key was wrapped as the footer's.
pub fn check_sealed_layout(
    metadata: &ParquetMetaData,
    columns: &[&str],
    retriever: &PlatformKeyRetriever,
) -> Result<(), LayoutError> {
    let schema = metadata.file_metadata().schema_descr();
    let leaves: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
    if leaves != columns {
        return Err(LayoutError::Columns);
    }
    for group in metadata.row_groups() {
        if group.columns().len() != columns.len() {
            return Err(LayoutError::Columns);
        }
        for (chunk, name) in group.columns().iter().zip(columns) {
            let name = (*name).to_owned();
            let with_key = match chunk.crypto_metadata() {
                None => return Err(LayoutError::UnencryptedColumn(name)),
                Some(ColumnCryptoMetaData::ENCRYPTION_WITH_FOOTER_KEY) => {
                    return Err(LayoutError::FooterKeyColumn(name));
                }
                Some(ColumnCryptoMetaData::ENCRYPTION_WITH_COLUMN_KEY(k)) => k,
            };
            if with_key.path_in_schema != [name.clone()] {
                return Err(LayoutError::ForeignKey(name));
            }
            let Some(key_metadata) = with_key.key_metadata.as_deref() else {
                return Err(LayoutError::MissingKey(name));
            };
            let wrapped = WrappedKey::from_metadata(key_metadata)
                .map_err(|_| LayoutError::MissingKey(name.clone()))?;
            if wrapped.col != name {
                return Err(LayoutError::ForeignKey(name));
            }
        }
    }
    // Every key the footer read unwrapped: the footer's, and the columns' own.
    let opened = retriever.opened_names();
    if !opened.contains(FOOTER) {
        return Err(LayoutError::FooterKey);
    }
    if let Some(other) = opened
        .iter()
        .find(|n| n.as_str() != FOOTER && !columns.contains(&n.as_str()))
    {
        return Err(LayoutError::ForeignKey(other.clone()));
    }
    Ok(())
}
