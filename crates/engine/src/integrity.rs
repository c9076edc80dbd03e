//! File integrity before reading: a contribution's stored file must hash to the SHA-256 the
//! catalog recorded and the signed manifest carries. Hashes are computed once per engine and
//! file (clones of an engine, as the server's requests use, share the cache), and again
//! whenever the file's size or modification time changes. A rewrite that keeps both — same
//! length, the time set back — is still caught when read: every page and the footer are
//! authenticated (AES-GCM) as they are decrypted, under keys only that package's manifest
//! wraps. A file that fails is hashed again at every check.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use blindwatch_crypto::Sha256;
use blindwatch_crypto::manifest::Manifest;
use blindwatch_crypto::sign::Envelope;

use crate::EngineError;
use crate::tables::StoredFile;

#[derive(Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        len: m.len(),
        modified: m.modified().ok(),
    })
}

/// What the manifest says, reduced to what is checked.
#[derive(Clone)]
struct ManifestFacts {
    partner: String,
    dataset: String,
    sequence: u64,
    file_sha256: String,
}

#[derive(Default)]
pub(crate) struct IntegrityCache {
    files: Mutex<HashMap<PathBuf, (Stamp, String)>>,
    manifests: Mutex<HashMap<PathBuf, (Stamp, Option<ManifestFacts>)>>,
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hash.finish_hex())
}

impl IntegrityCache {
    fn file_hash(&self, path: &Path) -> std::io::Result<String> {
        let now = stamp(path)?;
        if let Some((s, h)) = self.files.lock().ok().and_then(|m| m.get(path).cloned())
            && s == now
        {
            return Ok(h);
        }
        let hash = sha256_file(path)?;
        // Only trust the hash if the file did not change while it was read.
        if stamp(path)? == now
            && let Ok(mut m) = self.files.lock()
        {
            m.insert(path.to_owned(), (now, hash.clone()));
        }
        Ok(hash)
    }

    fn manifest(&self, path: &Path) -> std::io::Result<Option<ManifestFacts>> {
        let now = stamp(path)?;
        if let Some((s, facts)) = self
            .manifests
            .lock()
            .ok()
            .and_then(|m| m.get(path).cloned())
            && s == now
        {
            return Ok(facts);
        }
        let bytes = std::fs::read(path)?;
        // Ingest verified the signature; here the manifest is only read back.
        let facts = Envelope::from_json(&bytes)
            .ok()
            .and_then(|e| Manifest::peek_unverified(&e))
            .map(|m| ManifestFacts {
                partner: m.partner,
                dataset: m.dataset,
                sequence: m.sequence,
                file_sha256: m.file_sha256,
            });
        if let Ok(mut m) = self.manifests.lock() {
            m.insert(path.to_owned(), (now, facts.clone()));
        }
        Ok(facts)
    }

    fn forget(&self, path: &Path) {
        if let Ok(mut m) = self.files.lock() {
            m.remove(path);
        }
        if let Ok(mut m) = self.manifests.lock() {
            m.remove(path);
        }
    }

    /// Checks one stored file (blocking: hashes the file on a cache miss).
    pub(crate) fn verify(&self, f: &StoredFile) -> Result<(), EngineError> {
        let fail = |what: String| EngineError::Integrity {
            table: f.table.clone(),
            sequence: f.sequence,
            file: f.file.clone(),
            what,
        };
        let actual = self
            .file_hash(&f.path)
            .map_err(|e| fail(format!("the stored file cannot be read ({})", e.kind())))?;
        if !actual.eq_ignore_ascii_case(&f.catalog_sha256) {
            // A bad file is hashed again next time, so a restored file is noticed at once.
            self.forget(&f.path);
            return Err(fail(
                "the stored file's SHA-256 does not match the hash the catalog recorded at ingest"
                    .into(),
            ));
        }
        let facts = self
            .manifest(&f.manifest_path)
            .map_err(|e| {
                fail(format!(
                    "its signed manifest {} cannot be read ({})",
                    f.manifest_file,
                    e.kind()
                ))
            })?
            .ok_or_else(|| {
                fail(format!(
                    "its signed manifest {} is not a readable manifest envelope",
                    f.manifest_file
                ))
            })?;
        if !actual.eq_ignore_ascii_case(&facts.file_sha256) {
            self.forget(&f.manifest_path);
            return Err(fail(
                "the stored file's SHA-256 does not match its signed manifest".into(),
            ));
        }
        if format!("{}.{}", facts.partner, facts.dataset) != f.table || facts.sequence != f.sequence
        {
            return Err(fail(format!(
                "its signed manifest {} describes another contribution",
                f.manifest_file
            )));
        }
        Ok(())
    }
}
