//! Ingest: the checks a contribution passes before the platform keeps it, in this order —
//! known partner and key, signature, file hash, contract and schema, sequence, key
//! unwrapping (every column key opens and every page decrypts and authenticates). Only then
//! is the file stored as received (staged, fsynced, renamed) and recorded in the catalog.
//! Any failure stores nothing and leaves the catalog unchanged; the refusal is audited.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blindwatch_audit::{
    AuditEvent, AuditLog, AuditRecord, DatasetId, PartnerId, Principal, ReasonCode,
};
use blindwatch_common::fsutil;
use blindwatch_contract::ContractSet;
use blindwatch_crypto::Sha256;
use blindwatch_crypto::manifest::{MANIFEST_FORMAT, Manifest, SealedContent, schema_digest};
use blindwatch_crypto::sealing::{PlatformKeyRetriever, Release};
use blindwatch_crypto::sign::{Envelope, EnvelopeError};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_store::{Catalog, CatalogError, DataDir, NewContribution};
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};

/// A manifest is small; anything bigger is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The check that refused a package. Messages name the check and what to do; they never
/// quote file contents.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("package: {0}")]
    Package(String),
    #[error("partner: {0}")]
    Partner(String),
    #[error("signature: {0}")]
    Signature(#[from] EnvelopeError),
    #[error(
        "file hash: the Parquet file does not match the SHA-256 in the signed manifest (altered or truncated in transit); ask the partner to send it again"
    )]
    FileHash,
    #[error("contract: {0}")]
    Contract(String),
    #[error("sequence: {0}")]
    Sequence(String),
    #[error("key unwrapping: {0}")]
    Keys(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("token key: {0}")]
    TokenKey(String),
}

impl IngestError {
    /// Value-free reason code for the audit log.
    pub fn reason_code(&self) -> &'static str {
        match self {
            IngestError::Package(_) => "bad-package",
            IngestError::Partner(_) => "unknown-partner",
            IngestError::Signature(_) => "bad-signature",
            IngestError::FileHash => "bad-file-hash",
            IngestError::Contract(_) => "contract-mismatch",
            IngestError::Sequence(_) => "stale-sequence",
            IngestError::Keys(_) => "key-unwrap-failed",
            IngestError::Storage(_) => "storage-failed",
            IngestError::TokenKey(_) => "unknown-token-key",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub table: String,
    pub sequence: u64,
    pub rows: u64,
    pub contribution_id: i64,
    pub stored_at: PathBuf,
}

pub struct Ingestor {
    data_dir: DataDir,
    catalog: Catalog,
    contracts: ContractSet,
    platform_key: Arc<PlatformPrivateKey>,
}

/// The two files of a package, found from either one's path.
pub fn package_files(path: &Path) -> Result<(PathBuf, PathBuf), IngestError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| IngestError::Package(format!("{} is not a package file", path.display())))?;
    let stem = name
        .strip_suffix(".manifest.json")
        .or_else(|| name.strip_suffix(".parquet"))
        .ok_or_else(|| {
            IngestError::Package(format!(
                "{} is neither a `.parquet` nor a `.manifest.json` file of a package",
                path.display()
            ))
        })?;
    Ok((
        path.with_file_name(format!("{stem}.parquet")),
        path.with_file_name(format!("{stem}.manifest.json")),
    ))
}

impl Ingestor {
    pub fn new(
        data_dir: DataDir,
        catalog: Catalog,
        contracts: ContractSet,
        platform_key: Arc<PlatformPrivateKey>,
    ) -> Ingestor {
        Ingestor {
            data_dir,
            catalog,
            contracts,
            platform_key,
        }
    }

    /// Checks and stores one package, and audits the outcome.
    pub async fn ingest(
        &self,
        package: &Path,
        audit: &mut AuditLog,
    ) -> Result<Accepted, IngestError> {
        let mut claimed: Option<Manifest> = None;
        let result = self.check_and_store(package, &mut claimed).await;
        let (partner, dataset, sequence, rows) = match &claimed {
            Some(m) => (
                m.partner.as_str(),
                m.dataset.as_str(),
                m.sequence,
                Some(m.row_count),
            ),
            None => ("unknown", "unknown", 0, None),
        };
        let partner_id = PartnerId::new(partner).or_else(|_| PartnerId::new("unknown"));
        let dataset_id = DatasetId::new(dataset).or_else(|_| DatasetId::new("unknown"));
        let event = match (&result, partner_id, dataset_id) {
            (Ok(a), Ok(partner), Ok(dataset)) => Some(AuditEvent::ContributionAccepted {
                partner,
                dataset,
                sequence: a.sequence,
                rows: a.rows,
            }),
            (Err(e), Ok(partner), Ok(dataset)) => {
                ReasonCode::new(e.reason_code()).ok().map(|reason| {
                    AuditEvent::ContributionRefused {
                        partner,
                        dataset,
                        sequence,
                        reason,
                        rows,
                    }
                })
            }
            _ => None,
        };
        let actor = Principal::new(format!("partner:{partner}"))
            .or_else(|_| Principal::new("partner:unknown"));
        if let (Some(event), Ok(actor)) = (event, actor)
            && let Err(e) = audit.append(&AuditRecord::now(actor, event))
        {
            // The outcome stands (an accepted package is already committed), but an
            // unaudited action must not pass silently.
            tracing::error!(error = %e, "could not append the ingest outcome to the audit log");
            return Err(IngestError::Storage(format!(
                "the outcome could not be written to the audit log ({e}); repair the log with `blindwatch audit verify` before ingesting more"
            )));
        }
        match &result {
            Ok(a) => {
                tracing::info!(table = %a.table, sequence = a.sequence, rows = a.rows, "contribution accepted")
            }
            Err(e) => tracing::warn!(reason = e.reason_code(), "contribution refused"),
        }
        result
    }

    async fn check_and_store(
        &self,
        package: &Path,
        claimed: &mut Option<Manifest>,
    ) -> Result<Accepted, IngestError> {
        let (parquet_path, manifest_path) = package_files(package)?;
        let manifest_bytes = read_small(&manifest_path)?;
        let envelope = Envelope::from_json(&manifest_bytes)?;
        let unverified = Manifest::peek_unverified(&envelope)
            .ok_or(IngestError::Signature(EnvelopeError::Format))?;

        // 1. Known partner and key.
        let partner = self
            .catalog
            .partner(&unverified.partner)
            .await
            .map_err(|e| IngestError::Storage(e.to_string()))?
            .ok_or_else(|| IngestError::Partner(format!("`{}` is not a registered partner: register it with `blindwatch partner register`", unverified.partner)))?;
        if !envelope.signer_ids().any(|id| id == partner.key.id()) {
            return Err(IngestError::Partner(format!(
                "the manifest is not signed with the registered key {} of partner `{}`: re-register the partner's new key or re-sign",
                partner.key.id(),
                partner.name
            )));
        }
        // 2. Signature.
        let manifest = Manifest::verify(&envelope, &partner.key)?;
        *claimed = Some(manifest.clone());
        if manifest.partner != partner.name {
            return Err(IngestError::Signature(EnvelopeError::Format));
        }
        if manifest.format != MANIFEST_FORMAT {
            return Err(IngestError::Package(format!(
                "manifest format {} is not the one this platform reads ({MANIFEST_FORMAT}): seal again with the partner tool of this version",
                manifest.format
            )));
        }
        if parquet_path.file_name().and_then(|n| n.to_str()) != Some(manifest.file_name.as_str()) {
            return Err(IngestError::Package(format!(
                "the manifest describes file {}, not the one beside it",
                manifest.file_name
            )));
        }

        self.check_token_key(&manifest)?;

        // 3. File hash, computed on the staged copy so what is checked is what is stored.
        let staged = self.stage(&parquet_path, &manifest)?;

        // 4. Contract and schema.
        let table = manifest.table_name();
        if !partner.datasets.contains(&table) {
            return Err(IngestError::Contract(format!(
                "partner `{}` is not registered to contribute to {table}",
                partner.name
            )));
        }
        let contract = self
            .contracts
            .get(&table)
            .map_err(|e| IngestError::Contract(e.to_string()))?;
        let expected = contract.sealed_columns();
        if manifest.columns != expected || manifest.schema_digest != schema_digest(&expected) {
            return Err(IngestError::Contract(format!(
                "the package's columns do not match the contract of {table}: seal again with the current contract"
            )));
        }

        // 5. Sequence.
        let last = self
            .catalog
            .last_sequence(&table)
            .await
            .map_err(|e| IngestError::Storage(e.to_string()))?;
        if let Some(last) = last.filter(|l| *l >= manifest.sequence) {
            return Err(IngestError::Sequence(format!(
                "sequence {} of {table} is not newer than the last accepted ({last}): a replayed or stale package",
                manifest.sequence
            )));
        }

        // 6. Key unwrapping: every key opens, every page authenticates, the rows are all there.
        self.check_keys(staged.path(), &manifest, contract)?;

        // Store as received, then record. The catalog row is the commit point.
        let dir = self
            .data_dir
            .package_dir(&manifest.partner, &manifest.dataset);
        let stored = dir.join(&manifest.file_name);
        let stored_manifest = dir.join(manifest_path.file_name().unwrap_or_default());
        let storage =
            |e: std::io::Error| IngestError::Storage(format!("cannot store the package: {e}"));
        std::fs::create_dir_all(&dir).map_err(storage)?;
        // A file without a catalog row is a leftover of a crash during an earlier ingest.
        for leftover in [&stored, &stored_manifest] {
            if leftover.exists() {
                std::fs::remove_file(leftover).map_err(storage)?;
            }
        }
        fsutil::persist(staged, &stored).map_err(storage)?;
        fsutil::write_new(&stored_manifest, &manifest_bytes).map_err(storage)?;
        let rel = |p: &Path| {
            p.strip_prefix(self.data_dir.root())
                .unwrap_or(p)
                .display()
                .to_string()
        };
        let record = NewContribution {
            table: &table,
            partner: &manifest.partner,
            dataset: &manifest.dataset,
            sequence: manifest.sequence,
            file_path: &rel(&stored),
            manifest_path: &rel(&stored_manifest),
            file_sha256: &manifest.file_sha256,
            file_bytes: manifest.file_bytes,
            row_count: manifest.row_count,
            schema_digest: &manifest.schema_digest,
            token_mode: &manifest.tokens.mode.to_string(),
            token_key_id: manifest.tokens.key_id.as_str(),
            created_at: &manifest.created_at,
        };
        let id = match self.catalog.record_contribution(&record).await {
            Ok(id) => id,
            Err(e) => {
                let _ = std::fs::remove_file(&stored);
                let _ = std::fs::remove_file(&stored_manifest);
                return Err(match e {
                    CatalogError::Stale { .. } => IngestError::Sequence(e.to_string()),
                    other => IngestError::Storage(other.to_string()),
                });
            }
        };
        Ok(Accepted {
            table,
            sequence: manifest.sequence,
            rows: manifest.row_count,
            contribution_id: id,
            stored_at: stored,
        })
    }

    /// A blind package's tokens must be the deployment's token authority's (its public key
    /// in `keys/token-authority.pub`, set by `blindwatch keys authority`): tokens under any
    /// other key join nothing, or were made by an impostor's key.
    fn check_token_key(&self, manifest: &Manifest) -> Result<(), IngestError> {
        use blindwatch_crypto::blind::{AUTHORITY_PUBLIC_KEY_FILE, AuthorityPublicKey};
        if manifest.tokens.mode != blindwatch_crypto::token::TokenMode::Blind {
            return Ok(());
        }
        let path = self.data_dir.keys_dir().join(AUTHORITY_PUBLIC_KEY_FILE);
        if !path.exists() {
            return Err(IngestError::TokenKey(format!(
                "this platform has no token authority key, so it accepts no blind package: run `blindwatch keys authority --data-dir {} --key AUTHORITY.pub` with the public key the authority's operator gives",
                self.data_dir.root().display()
            )));
        }
        let key =
            AuthorityPublicKey::read(&path).map_err(|e| IngestError::TokenKey(e.to_string()))?;
        if &manifest.tokens.key_id != key.key_id() {
            return Err(IngestError::TokenKey(format!(
                "the package's tokens were made under key {}, but this deployment's token authority key is {}: they would join nothing, or were made by an impostor; the partner must seal again through the deployment's authority, pinning its key",
                manifest.tokens.key_id,
                key.key_id()
            )));
        }
        Ok(())
    }

    /// Copies the file into the staging area while hashing it, and checks hash and size.
    fn stage(
        &self,
        parquet_path: &Path,
        manifest: &Manifest,
    ) -> Result<tempfile::NamedTempFile, IngestError> {
        let mut src = std::fs::File::open(parquet_path).map_err(|e| {
            IngestError::Package(format!("cannot read {}: {e}", parquet_path.display()))
        })?;
        let tmp_dir = self.data_dir.tmp_dir();
        let mut staged = tempfile::Builder::new()
            .prefix(".ingest-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| {
                IngestError::Storage(format!("cannot stage in {}: {e}", tmp_dir.display()))
            })?;
        let mut hash = Sha256::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(|e| {
                IngestError::Package(format!("cannot read {}: {e}", parquet_path.display()))
            })?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            total += n as u64;
            staged
                .write_all(&buf[..n])
                .map_err(|e| IngestError::Storage(e.to_string()))?;
        }
        if total != manifest.file_bytes || hash.finish_hex() != manifest.file_sha256 {
            return Err(IngestError::FileHash);
        }
        Ok(staged)
    }

    fn check_keys(
        &self,
        path: &Path,
        manifest: &Manifest,
        contract: &blindwatch_contract::Contract,
    ) -> Result<(), IngestError> {
        if &manifest.platform_key_id != self.platform_key.id() {
            return Err(IngestError::Keys(format!(
                "the package was sealed to platform key {}, this platform's key is {}: the partner must seal with this platform's public key",
                manifest.platform_key_id,
                self.platform_key.id()
            )));
        }
        let retriever = PlatformKeyRetriever::new(self.platform_key.clone(), Release::All);
        let keys_err = |what: &str| {
            let detail = retriever
                .take_failure()
                .map(|f| f.to_string())
                .unwrap_or_else(|| what.to_owned());
            IngestError::Keys(format!(
                "{detail}: the package cannot be decrypted by this platform"
            ))
        };
        let props = retriever
            .decryption_properties()
            .map_err(|_| keys_err("decryption setup failed"))?;
        let file = std::fs::File::open(path).map_err(|e| IngestError::Storage(e.to_string()))?;
        let options = ArrowReaderOptions::new().with_file_decryption_properties(props);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|_| keys_err("the footer does not decrypt"))?;
        let names: Vec<&str> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let expected: Vec<&str> = manifest.columns.iter().map(|c| c.name.as_str()).collect();
        if names != expected {
            return Err(IngestError::Contract(format!(
                "the file's columns differ from its manifest and the contract of {}",
                contract.table_name()
            )));
        }
        let token_columns: Vec<usize> = manifest
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.content, SealedContent::Token { .. }))
            .map(|(i, _)| i)
            .collect();
        let declared: Vec<&str> = manifest.token_counts.keys().map(String::as_str).collect();
        let token_names: Vec<&str> = token_columns.iter().map(|&i| expected[i]).collect();
        let mut sorted_names = token_names.clone();
        sorted_names.sort_unstable();
        if declared != sorted_names {
            return Err(IngestError::Contract(
                "the manifest's token counts do not name exactly the token columns: seal again with this version of the partner tool".into(),
            ));
        }
        let reader = builder
            .build()
            .map_err(|_| keys_err("the file cannot be read"))?;
        let mut rows = 0u64;
        let mut tokens = vec![0u64; token_columns.len()];
        for batch in reader {
            let batch = batch.map_err(|_| keys_err("a page does not decrypt or authenticate"))?;
            rows += batch.num_rows() as u64;
            for (n, &i) in tokens.iter_mut().zip(&token_columns) {
                let column = batch.column(i);
                *n += (column.len() - column.null_count()) as u64;
            }
        }
        if rows != manifest.row_count {
            return Err(IngestError::Contract(format!(
                "the file holds {rows} rows where the manifest declares {}",
                manifest.row_count
            )));
        }
        for (name, found) in token_names.iter().zip(&tokens) {
            let declared = manifest.token_counts.get(*name).copied().unwrap_or(0);
            if *found != declared {
                return Err(IngestError::Contract(format!(
                    "token column `{name}` holds {found} tokens where the manifest declares {declared} valid identifiers: the package is damaged; ask the partner to seal it again"
                )));
            }
        }
        Ok(())
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, IngestError> {
    let err = |e: std::io::Error| {
        IngestError::Package(format!("cannot read the manifest {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(IngestError::Package(format!(
            "{} is too large to be a manifest",
            path.display()
        )));
    }
    Ok(bytes)
}
