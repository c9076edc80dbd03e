//! Packages a careless or hostile partner can send with its own, registered signing key:
//! a sealed package taken apart, its file re-encrypted another way or replaced, its manifest
//! edited, and everything signed again.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use blindwatch_crypto::keys::KeyFileKind;
use blindwatch_crypto::manifest::Manifest;
use blindwatch_crypto::sealing::{FOOTER, PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::{Envelope, SigningKey};
use blindwatch_crypto::wrap::{PlatformPrivateKey, PlatformPublicKey, wrap_key};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::encryption::encrypt::FileEncryptionProperties;
use parquet::file::properties::WriterProperties;

/// A package as files: its (unverified) manifest and its Parquet bytes.
#[derive(Clone)]
pub struct Package {
    pub manifest: Manifest,
    pub parquet: Vec<u8>,
}

impl Package {
    /// Reads the package whose manifest is at `manifest`.
    pub fn read(manifest: &Path) -> Package {
        let envelope = Envelope::from_json(&std::fs::read(manifest).unwrap()).unwrap();
        let parquet = std::fs::read(
            manifest
                .to_string_lossy()
                .replace(".manifest.json", ".parquet"),
        )
        .unwrap();
        Package {
            manifest: Manifest::peek_unverified(&envelope).unwrap(),
            parquet,
        }
    }

    /// Replaces the file, and the hash and size the manifest declares for it.
    pub fn with_file(mut self, bytes: Vec<u8>) -> Package {
        self.manifest.file_sha256 = blindwatch_crypto::sha256_hex(&bytes);
        self.manifest.file_bytes = bytes.len() as u64;
        self.parquet = bytes;
        self
    }

    pub fn edit(mut self, f: impl FnOnce(&mut Manifest)) -> Package {
        f(&mut self.manifest);
        self
    }

    /// Writes the package into `dir` (a fresh directory), signed with `key`; returns the
    /// manifest's path. Files are named as the partner tool names them.
    pub fn write(&self, dir: &Path, key: &SigningKey) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let stem = "package";
        let manifest = dir.join(format!("{stem}.manifest.json"));
        std::fs::write(dir.join(format!("{stem}.parquet")), &self.parquet).unwrap();
        std::fs::write(&manifest, self.manifest.sign(key).to_json()).unwrap();
        manifest
    }

    /// Like [`Package::write`], with the manifest as JSON edited by `f` before it is signed
    /// (fields the manifest type cannot express: unknown ones, missing ones).
    pub fn write_json(
        &self,
        dir: &Path,
        key: &SigningKey,
        f: impl FnOnce(&mut serde_json::Value),
    ) -> PathBuf {
        let mut json = serde_json::to_value(&self.manifest).unwrap();
        f(&mut json);
        let payload = serde_json::to_vec(&json).unwrap();
        let envelope = Envelope::sign(
            blindwatch_crypto::manifest::MANIFEST_PAYLOAD_TYPE,
            &payload,
            key,
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("package.parquet"), &self.parquet).unwrap();
        let manifest = dir.join("package.manifest.json");
        std::fs::write(&manifest, envelope.to_json()).unwrap();
        manifest
    }

    /// The signed manifest's bytes.
    pub fn signed_manifest(&self, key: &SigningKey) -> Vec<u8> {
        self.manifest.sign(key).to_json()
    }
}

pub fn partner_key(path: &Path) -> SigningKey {
    SigningKey::read(path, KeyFileKind::PartnerSigning).unwrap()
}

/// Decrypts a sealed file with the platform's key (the test plays a partner that knows
/// its own data).
pub fn decrypt(platform: &Path, parquet: &Path) -> Vec<RecordBatch> {
    let key = Arc::new(PlatformPrivateKey::read(&platform.join("keys/platform.key")).unwrap());
    let retriever = PlatformKeyRetriever::new(key, Release::All);
    let options = ArrowReaderOptions::new()
        .with_file_decryption_properties(retriever.decryption_properties().unwrap());
    ParquetRecordBatchReaderBuilder::try_new_with_options(
        std::fs::File::open(parquet).unwrap(),
        options,
    )
    .unwrap()
    .build()
    .unwrap()
    .map(|b| b.unwrap())
    .collect()
}

/// How a forged file is encrypted.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Plain Parquet: no encryption at all.
    Plain,
    /// As the partner tool seals (the control case).
    Sealed,
    /// Every column under its own key, but the footer in plaintext (signed only).
    PlaintextFooter,
    /// Every column but this one encrypted.
    Unencrypted(&'static str),
    /// Every column under the footer key (uniform encryption).
    FooterKeyOnly,
    /// This column's key wrapped for another column's name.
    KeyWrappedFor {
        column: &'static str,
        name: &'static str,
    },
    /// The footer key wrapped for a column's name instead of the footer's.
    FooterWrappedFor(&'static str),
}

fn random_key() -> Vec<u8> {
    blindwatch_crypto::random_secret::<32>().unwrap().to_vec()
}

/// Writes `batches` as Parquet under `layout`, keys wrapped to `platform_pub`.
pub fn write(batches: &[RecordBatch], layout: &Layout, platform_pub: &Path) -> Vec<u8> {
    let public = PlatformPublicKey::read(platform_pub).unwrap();
    let schema = batches[0].schema();
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let wrapped = |name: &str, key: &[u8]| wrap_key(&public, name, key).unwrap().to_metadata();
    let footer_key = random_key();
    let footer_name = match layout {
        Layout::FooterWrappedFor(column) => column,
        _ => FOOTER,
    };
    let mut builder = FileEncryptionProperties::builder(footer_key.clone())
        .with_footer_key_metadata(wrapped(footer_name, &footer_key));
    for c in &columns {
        let key = random_key();
        match layout {
            Layout::Unencrypted(skip) if c == skip => continue,
            Layout::FooterKeyOnly => continue,
            Layout::KeyWrappedFor { column, name } if c == column => {
                builder = builder.with_column_key_and_metadata(c, key.clone(), wrapped(name, &key));
            }
            _ => builder = builder.with_column_key_and_metadata(c, key.clone(), wrapped(c, &key)),
        }
    }
    if let Layout::PlaintextFooter = layout {
        builder = builder.with_plaintext_footer(true);
    }
    let mut props = WriterProperties::builder();
    if !matches!(layout, Layout::Plain) {
        props = props.with_file_encryption_properties(builder.build().unwrap());
    }
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props.build())).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
    out
}
