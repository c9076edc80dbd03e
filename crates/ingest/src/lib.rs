//! Ingest: the checks a contribution passes before the platform keeps it, in this order —
//!
//! 1. the package's files are regular files, the manifest small;
//! 2. known partner and key; the signature;
//! 3. every manifest field in the closed grammar of what the sealer writes (a known format,
//!    names, a sequence in 1..2^63, RFC 3339 UTC time, digests, key ids, rejection reasons
//!    `<column>:<code>` naming a contract column and a sealer's code), `partner_key_id` the
//!    signer's key, `platform_key_id` this platform's;
//! 4. contract and schema;
//! 5. sequence: newer than every accepted one of the dataset;
//! 6. tokens: the mode and key of the dataset's current token generation (a key change is an
//!    explicit rotation, `blindwatch dataset rotate-tokens`);
//! 7. an empty `replace` contribution only when its manifest says it is meant;
//! 8. the file: copied into staging, stopping at the declared size, then its size and SHA-256;
//! 9. sealed: encrypted footer, every column under its own key wrapped for it, every key
//!    opens, every page decrypts and authenticates, rows and tokens as declared.
//!
//! Only then is the file stored byte for byte, under a name the platform gives it (table,
//! sequence, SHA-256) — never replacing a file — and recorded in the catalog, the commit
//! point. A failure stores nothing, removes its staging files and leaves the catalog as it
//! was; the outcome is audited either way. Staging left by a killed process is swept at the
//! next start ([`sweep_staging`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blindwatch_audit::{
    AuditEvent, AuditLog, AuditRecord, DatasetId, PartnerId, Principal, ReasonCode,
};
use blindwatch_contract::{ColumnType, Contract, ContractSet, Mode, Role};
use blindwatch_crypto::Sha256;
use blindwatch_crypto::manifest::{
    GrammarError, MANIFEST_FORMATS, MANIFEST_PAYLOAD_TYPE, Manifest, SealedContent,
    is_rejection_code, schema_digest,
};
use blindwatch_crypto::sealing::{
    LayoutError, PlatformKeyRetriever, Release, check_footer_magic, check_sealed_layout,
};
use blindwatch_crypto::sign::{Envelope, EnvelopeError};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_store::{
    Catalog, CatalogError, DataDir, NewContribution, PartnerRecord, TokenMismatch,
};
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
    #[error("manifest: {0}; the partner tool of this version writes only valid manifests")]
    Manifest(#[from] GrammarError),
    #[error("contract: {0}")]
    Contract(String),
    #[error("sequence: {0}")]
    Sequence(String),
    #[error("tokens: {0}")]
    Tokens(String),
    #[error(
        "empty replacement: the package holds no rows and {0} is a replace dataset, so it would empty the dataset; \
         if that is meant, the partner seals it with `partner seal --allow-empty`"
    )]
    Empty(String),
    #[error(
        "file size: the Parquet file is not the {declared} bytes its signed manifest declares (altered, truncated or the wrong file); ask the partner to send it again"
    )]
    FileSize { declared: u64 },
    #[error(
        "file hash: the Parquet file does not match the SHA-256 in the signed manifest (altered or truncated in transit); ask the partner to send it again"
    )]
    FileHash,
    #[error("sealing: {0}; only packages sealed with `blindwatch partner seal` are accepted")]
    NotSealed(#[from] LayoutError),
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
            IngestError::Manifest(_) => "bad-manifest",
            IngestError::Contract(_) => "contract-mismatch",
            IngestError::Sequence(_) => "stale-sequence",
            IngestError::Tokens(_) => "token-key-mismatch",
            IngestError::Empty(_) => "empty-replacement",
            IngestError::FileSize { .. } => "bad-file-size",
            IngestError::FileHash => "bad-file-hash",
            IngestError::NotSealed(_) => "not-sealed",
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
    /// An empty contribution the manifest allowed (for a replace dataset: it is now empty).
    pub empty: bool,
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

/// Removes everything in the data directory's staging area (`tmp/`): what is there at
/// start was left by a process that was killed while receiving a package. Takes the audit
/// log, whose file lock makes this process the directory's only writer, so nothing it
/// removes is in use. Returns how many entries it removed.
pub fn sweep_staging(dir: &DataDir, _writer: &AuditLog) -> std::io::Result<usize> {
    let tmp = dir.tmp_dir();
    let entries = match std::fs::read_dir(&tmp) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        removed += 1;
    }
    if removed > 0 {
        tracing::info!(
            removed,
            "removed staging files left by an interrupted process"
        );
    }
    Ok(removed)
}

/// A file this attempt stored, removed again unless the attempt commits.
struct Placed {
    path: PathBuf,
    keep: bool,
}

impl Placed {
    fn commit(mut self) {
        self.keep = true;
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A package checked (and stored, if accepted) whose audit records are not yet appended.
#[must_use = "an outcome must be audited"]
pub struct Outcome {
    result: Result<Accepted, IngestError>,
    records: Result<Vec<AuditRecord>, String>,
}

impl Outcome {
    /// Appends the outcome's records (the caller checkpoints) and returns the outcome.
    pub fn audit(self, audit: &mut AuditLog) -> Result<Accepted, IngestError> {
        let appended = self.records.and_then(|records| {
            records
                .iter()
                .try_for_each(|r| audit.append(r).map(|_| ()).map_err(|e| e.to_string()))
        });
        if let Err(e) = appended {
            // The outcome stands (an accepted package is already committed), but an
            // unaudited action must not pass silently.
            tracing::error!(error = %e, "could not append the ingest outcome to the audit log");
            return Err(IngestError::Storage(format!(
                "the outcome could not be written to the audit log ({e}); repair the log with `blindwatch audit verify` before ingesting more"
            )));
        }
        match &self.result {
            Ok(a) => {
                tracing::info!(table = %a.table, sequence = a.sequence, rows = a.rows, "contribution accepted")
            }
            Err(e) => tracing::warn!(reason = e.reason_code(), "contribution refused"),
        }
        self.result
    }
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
        self.check_and_store_unaudited(package).await.audit(audit)
    }

    /// Checks and stores one package (the catalog row is the commit point) and returns the
    /// outcome with its audit records, for a caller that holds the audit log only to append
    /// them ([`Outcome::audit`]): the copy, hashing and decryption run without the log.
    pub async fn check_and_store_unaudited(&self, package: &Path) -> Outcome {
        let mut claimed: Option<Manifest> = None;
        let result = self.check_and_store(package, &mut claimed).await;
        // Only what the partner's signature vouches for is logged, and only as valid ids.
        let (partner, dataset, sequence, rows) = match &claimed {
            Some(m) => (
                PartnerId::new(&m.partner).ok(),
                DatasetId::new(&m.dataset).ok(),
                m.sequence,
                Some(m.row_count),
            ),
            None => (None, None, 0, None),
        };
        let unknown = |id: Option<PartnerId>| id.or_else(|| PartnerId::new("unknown").ok());
        let partner = unknown(partner);
        let dataset = dataset.or_else(|| DatasetId::new("unknown").ok());
        let mut events = Vec::new();
        if let (Some(partner), Some(dataset)) = (partner.clone(), dataset) {
            match &result {
                Ok(a) => {
                    events.push(AuditEvent::ContributionAccepted {
                        partner: partner.clone(),
                        dataset: dataset.clone(),
                        sequence: a.sequence,
                        rows: a.rows,
                    });
                    if a.empty {
                        events.push(AuditEvent::EmptyContributionAccepted {
                            partner,
                            dataset,
                            sequence: a.sequence,
                            replaced: self
                                .contracts
                                .get(&a.table)
                                .is_ok_and(|c| c.mode == Mode::Replace),
                        });
                    }
                }
                Err(e) => {
                    if let Ok(reason) = ReasonCode::new(e.reason_code()) {
                        events.push(AuditEvent::ContributionRefused {
                            partner,
                            dataset,
                            sequence,
                            reason,
                            rows,
                        });
                    }
                }
            }
        }
        let actor = Principal::new(format!(
            "partner:{}",
            partner.as_ref().map_or("unknown", PartnerId::as_str)
        ))
        .or_else(|_| Principal::new("partner:unknown"))
        .map_err(|e| e.to_string());
        let records = actor.map(|actor| {
            events
                .into_iter()
                .map(|event| AuditRecord::now(actor.clone(), event))
                .collect()
        });
        Outcome { result, records }
    }

    async fn check_and_store(
        &self,
        package: &Path,
        claimed: &mut Option<Manifest>,
    ) -> Result<Accepted, IngestError> {
        let (parquet_path, manifest_path) = package_files(package)?;
        let manifest_bytes = read_small(&manifest_path)?;
        let envelope = Envelope::from_json(&manifest_bytes)?;
        // Whose key to verify with; everything else is read only once the signature holds.
        let claimed_partner = Manifest::peek_partner(&envelope)
            .ok_or(IngestError::Signature(EnvelopeError::Format))?;

        // 2. Known partner and key, then the signature.
        let partner = self
            .catalog
            .partner(&claimed_partner)
            .await
            .map_err(|e| IngestError::Storage(e.to_string()))?
            .ok_or_else(|| {
                IngestError::Partner(
                    "the manifest names a partner that is not registered: register it with `blindwatch partner register`"
                        .into(),
                )
            })?;
        if !envelope.signer_ids().any(|id| id == partner.key.id()) {
            return Err(IngestError::Partner(format!(
                "the manifest is not signed with the registered key {} of partner `{}`: re-register the partner's new key or re-sign",
                partner.key.id(),
                partner.name
            )));
        }
        let payload = envelope.verify(MANIFEST_PAYLOAD_TYPE, &partner.key)?;
        let manifest: Manifest =
            serde_json::from_slice(&payload).map_err(|_| unreadable_manifest(&payload))?;
        *claimed = Some(manifest.clone());
        if manifest.partner != partner.name {
            return Err(IngestError::Signature(EnvelopeError::Format));
        }

        // 3-7. Everything the manifest says, before a byte of the file is copied: its
        // grammar, keys, contract, sequence, token generation and key, emptiness.
        let contract = self.check_manifest(&manifest, &partner).await?;
        self.check_token_key(&manifest)?;

        // 8. The file, copied while hashing, stopping at the declared size.
        let staged = self.stage(&parquet_path, &manifest)?;

        // 9. Sealed as the manifest says: every key opens, every page authenticates.
        self.check_sealed(staged.path(), &manifest, contract)?;

        // Store under the platform's names, then record: the catalog row is the commit point.
        let table = manifest.table_name();
        let (stored, stored_manifest) = self.data_dir.package_paths(
            &manifest.partner,
            &manifest.dataset,
            manifest.sequence,
            &manifest.file_sha256,
        );
        let mut staged_manifest = self.staging_file()?;
        staged_manifest
            .write_all(&manifest_bytes)
            .map_err(|e| storage("cannot stage the manifest", &e))?;
        let dir = self
            .data_dir
            .package_dir(&manifest.partner, &manifest.dataset);
        std::fs::create_dir_all(&dir).map_err(|e| storage("cannot store the package", &e))?;
        let placed_file = self.place(staged, &stored).await?;
        let placed_manifest = self.place(staged_manifest, &stored_manifest).await?;
        let record = NewContribution {
            table: &table,
            partner: &manifest.partner,
            dataset: &manifest.dataset,
            sequence: manifest.sequence,
            file_path: &self.relative(&stored),
            manifest_path: &self.relative(&stored_manifest),
            file_sha256: &manifest.file_sha256,
            file_bytes: manifest.file_bytes,
            row_count: manifest.row_count,
            schema_digest: &manifest.schema_digest,
            token_mode: &manifest.tokens.mode.to_string(),
            token_key_id: manifest.tokens.key_id.as_str(),
            created_at: &manifest.created_at,
        };
        let id = self
            .catalog
            .record_contribution(&record)
            .await
            .map_err(|e| match e {
                CatalogError::Stale { .. } => IngestError::Sequence(e.to_string()),
                CatalogError::TokenMismatch(_) => IngestError::Tokens(e.to_string()),
                other => IngestError::Storage(other.to_string()),
            })?;
        [placed_file, placed_manifest]
            .into_iter()
            .flatten()
            .for_each(Placed::commit);
        Ok(Accepted {
            table,
            sequence: manifest.sequence,
            rows: manifest.row_count,
            contribution_id: id,
            stored_at: stored,
            empty: manifest.row_count == 0,
        })
    }

    /// The manifest's own checks: grammar, keys, contract, sequence, tokens, emptiness.
    async fn check_manifest(
        &self,
        manifest: &Manifest,
        partner: &PartnerRecord,
    ) -> Result<&Contract, IngestError> {
        manifest.check_grammar()?;
        if &manifest.partner_key_id != partner.key.id() {
            return Err(GrammarError {
                field: "partner_key_id",
                rule: "the id of the key that signed the manifest",
            }
            .into());
        }
        if &manifest.platform_key_id != self.platform_key.id() {
            return Err(IngestError::Keys(format!(
                "the package was sealed to platform key {}, this platform's key is {}: the partner must seal with this platform's public key",
                manifest.platform_key_id,
                self.platform_key.id()
            )));
        }

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
        check_rejections(manifest, contract)?;
        let token_columns: Vec<&str> = expected
            .iter()
            .filter(|c| matches!(c.content, SealedContent::Token { .. }))
            .map(|c| c.name.as_str())
            .collect();
        if !manifest.token_counts.keys().map(String::as_str).eq({
            let mut sorted = token_columns.clone();
            sorted.sort_unstable();
            sorted
        }) {
            return Err(IngestError::Contract(
                "the manifest's token counts do not name exactly the token columns: seal again with this version of the partner tool".into(),
            ));
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

        // 6. Tokens: the dataset's current generation.
        let mode = manifest.tokens.mode.to_string();
        if let Some(g) = self
            .catalog
            .token_generation(&table)
            .await
            .map_err(|e| IngestError::Storage(e.to_string()))?
            && (g.token_mode != mode || g.token_key_id != manifest.tokens.key_id.as_str())
        {
            return Err(IngestError::Tokens(
                TokenMismatch {
                    table,
                    generation: g.generation,
                    current_mode: g.token_mode,
                    current_key: g.token_key_id,
                    mode,
                    key: manifest.tokens.key_id.to_string(),
                }
                .to_string(),
            ));
        }

        // 7. An empty replacement only when the partner signed that it is meant.
        if manifest.row_count == 0 && contract.mode == Mode::Replace && !manifest.allow_empty {
            return Err(IngestError::Empty(table));
        }
        Ok(contract)
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

    fn staging_file(&self) -> Result<tempfile::NamedTempFile, IngestError> {
        let tmp_dir = self.data_dir.tmp_dir();
        std::fs::create_dir_all(&tmp_dir)
            .map_err(|e| storage(&format!("cannot stage in {}", tmp_dir.display()), &e))?;
        tempfile::Builder::new()
            .prefix(".ingest-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| storage(&format!("cannot stage in {}", tmp_dir.display()), &e))
    }

    /// Copies the file into the staging area while hashing it, never more than the declared
    /// size, and checks size and hash. A device, a pipe or a directory is refused before a
    /// byte is read.
    fn stage(
        &self,
        parquet_path: &Path,
        manifest: &Manifest,
    ) -> Result<tempfile::NamedTempFile, IngestError> {
        let cannot_read = |e: std::io::Error| {
            IngestError::Package(format!("cannot read {}: {e}", parquet_path.display()))
        };
        let src = File::open(parquet_path).map_err(cannot_read)?;
        // The opened file's own metadata: what is checked is what is read.
        let meta = src.metadata().map_err(cannot_read)?;
        if !meta.is_file() {
            return Err(IngestError::Package(format!(
                "{} is not a regular file (a device, a pipe or a directory): send the package's Parquet file",
                parquet_path.display()
            )));
        }
        let declared = manifest.file_bytes;
        if meta.len() != declared {
            return Err(IngestError::FileSize { declared });
        }
        let mut staged = self.staging_file()?;
        let mut hash = Sha256::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        // One byte past the declared size is enough to know the file is too long.
        let mut src = src.take(declared.saturating_add(1));
        loop {
            let n = src.read(&mut buf).map_err(cannot_read)?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > declared {
                return Err(IngestError::FileSize { declared });
            }
            hash.update(&buf[..n]);
            staged
                .write_all(&buf[..n])
                .map_err(|e| storage("cannot stage the package", &e))?;
        }
        if total != declared {
            return Err(IngestError::FileSize { declared });
        }
        if hash.finish_hex() != manifest.file_sha256 {
            return Err(IngestError::FileHash);
        }
        Ok(staged)
    }

    /// Checks that the staged file is sealed as the partner tool seals and holds what the
    /// manifest declares: encrypted footer, every column under its own wrapped key, every
    /// key opens, every page authenticates, the rows and tokens are all there.
    fn check_sealed(
        &self,
        path: &Path,
        manifest: &Manifest,
        contract: &Contract,
    ) -> Result<(), IngestError> {
        let mut file = File::open(path).map_err(|e| storage("cannot read the staged file", &e))?;
        let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
        let ends = file
            .read_exact(&mut head)
            .and_then(|_| file.seek(SeekFrom::End(-8)))
            .and_then(|_| file.read_exact(&mut tail))
            .and_then(|_| file.rewind());
        if ends.is_err() {
            return Err(LayoutError::NotParquet.into());
        }
        check_footer_magic(&head, &tail)?;

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
        let options = ArrowReaderOptions::new().with_file_decryption_properties(props);
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
            .map_err(|_| keys_err("the footer does not decrypt"))?;
        let expected: Vec<&str> = manifest.columns.iter().map(|c| c.name.as_str()).collect();
        check_sealed_layout(builder.metadata(), &expected, &retriever)?;
        let fields = builder.schema().fields();
        let types_match = fields.len() == manifest.columns.len()
            && fields
                .iter()
                .zip(&manifest.columns)
                .all(|(f, c)| f.name() == &c.name && *f.data_type() == c.data_type.arrow_type());
        if !types_match {
            return Err(IngestError::Contract(format!(
                "the file's columns differ from its manifest and the contract of {}",
                contract.table_name()
            )));
        }
        let token_columns: Vec<(usize, &str)> = manifest
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.content, SealedContent::Token { .. }))
            .map(|(i, c)| (i, c.name.as_str()))
            .collect();
        let reader = builder
            .build()
            .map_err(|_| keys_err("the file cannot be read"))?;
        let mut rows = 0u64;
        let mut tokens = vec![0u64; token_columns.len()];
        for batch in reader {
            let batch = batch.map_err(|_| keys_err("a page does not decrypt or authenticate"))?;
            rows += batch.num_rows() as u64;
            for (n, (i, _)) in tokens.iter_mut().zip(&token_columns) {
                let column = batch.column(*i);
                *n += (column.len() - column.null_count()) as u64;
            }
        }
        if rows != manifest.row_count {
            return Err(IngestError::Contract(format!(
                "the file holds {rows} rows where the manifest declares {}",
                manifest.row_count
            )));
        }
        for ((_, name), found) in token_columns.iter().zip(&tokens) {
            let declared = manifest.token_counts.get(*name).copied();
            if Some(*found) != declared {
                return Err(IngestError::Contract(format!(
                    "token column `{name}` holds {found} tokens where the manifest declares {} valid identifiers: the package is damaged; ask the partner to seal it again",
                    declared.unwrap_or(0)
                )));
            }
        }
        Ok(())
    }

    /// Moves a staged file to its stored name without ever replacing a file. A file already
    /// there with the same bytes that no contribution records is what an interrupted ingest
    /// of this very package left: it is used as it is. Returns the file to remove if the
    /// attempt does not commit (None when it was there already).
    async fn place(
        &self,
        staged: tempfile::NamedTempFile,
        target: &Path,
    ) -> Result<Option<Placed>, IngestError> {
        let staged_file = staged.path().to_owned();
        match staged.persist_noclobber(target) {
            Ok(file) => {
                file.sync_all()
                    .map_err(|e| storage("cannot store the package", &e))?;
                if let Some(dir) = target.parent() {
                    blindwatch_common::fsutil::sync_dir(dir)
                        .map_err(|e| storage("cannot store the package", &e))?;
                }
                Ok(Some(Placed {
                    path: target.to_owned(),
                    keep: false,
                }))
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                let relative = self.relative(target);
                let recorded = self
                    .catalog
                    .is_recorded(&relative)
                    .await
                    .map_err(|e| IngestError::Storage(e.to_string()))?;
                let same = !recorded
                    && sha256_of(target)
                        .ok()
                        .zip(sha256_of(&staged_file).ok())
                        .is_some_and(|(a, b)| a == b);
                if same {
                    Ok(None)
                } else {
                    Err(IngestError::Storage(format!(
                        "{relative} already exists{}; the platform never replaces a stored file: move it aside after checking it and ingest again",
                        if recorded {
                            " and belongs to an accepted contribution"
                        } else {
                            " with other content (left by an interrupted ingest?)"
                        }
                    )))
                }
            }
            Err(e) => Err(storage("cannot store the package", &e.error)),
        }
    }

    fn relative(&self, p: &Path) -> String {
        p.strip_prefix(self.data_dir.root())
            .unwrap_or(p)
            .display()
            .to_string()
    }
}

/// Why a signed payload is not a manifest of this version: an unknown format, or fields
/// outside the format (named by the rule, never quoted).
fn unreadable_manifest(payload: &[u8]) -> IngestError {
    let format = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64));
    GrammarError {
        field: "format",
        rule: match format {
            Some(f) if MANIFEST_FORMATS.iter().any(|k| u64::from(*k) == f) => {
                "a field is missing, unknown or of the wrong type for this format"
            }
            _ => "not a manifest format this platform reads (2 or 3): seal again with the partner tool of this version",
        },
    }
    .into()
}

fn storage(what: &str, e: &std::io::Error) -> IngestError {
    IngestError::Storage(format!("{what}: {e}"))
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hash = Sha256::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hash.finish_hex());
        }
        hash.update(&buf[..n]);
    }
}

/// Each rejection reason names a column of the export the contract reads (identifier or
/// attribute) and a code the sealer gives for such a column.
fn check_rejections(manifest: &Manifest, contract: &Contract) -> Result<(), IngestError> {
    let refuse = || {
        IngestError::Manifest(GrammarError {
            field: "rejected_rows",
            rule: "each reason names a column of the contract and a code the sealer gives for it",
        })
    };
    for reason in manifest.rejected_rows.keys() {
        let (name, code) = reason.split_once(':').ok_or_else(refuse)?;
        let column = contract
            .columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(refuse)?;
        let known = match column.role {
            Role::Identifier => is_rejection_code(code, true),
            Role::Drop => false,
            Role::Attribute => {
                use blindwatch_crypto::manifest::attribute_rejection as a;
                code == a::BLANK
                    || code
                        == match column.column_type {
                            ColumnType::Utf8 => a::BLANK,
                            ColumnType::Int64 => a::INTEGER,
                            ColumnType::Float64 => a::NUMBER,
                            ColumnType::Bool => a::BOOLEAN,
                            ColumnType::Date => a::DATE,
                            ColumnType::Timestamp => a::TIMESTAMP,
                        }
            }
        };
        if !known {
            return Err(refuse());
        }
    }
    Ok(())
}

fn read_small(path: &Path) -> Result<Vec<u8>, IngestError> {
    let err = |e: std::io::Error| {
        IngestError::Package(format!("cannot read the manifest {}: {e}", path.display()))
    };
    let file = File::open(path).map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(IngestError::Package(format!(
            "{} is not a regular file: send the package's manifest",
            path.display()
        )));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_crypto::manifest::{IDENTIFIER_REJECTIONS, attribute_rejection as a};

    fn with_reason(reason: &str) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "format": 3, "partner": "p", "dataset": "d", "sequence": 1,
            "created_at": "2026-11-30T00:00:00Z", "file_name": "p.d.00000001.parquet",
            "file_sha256": "0".repeat(64), "file_bytes": 12, "row_count": 0, "columns": [],
            "schema_digest": "0".repeat(64),
            "tokens": {"mode": "consortium", "key_id": "0123456789abcdef"},
            "platform_key_id": "0123456789abcdef", "partner_key_id": "0123456789abcdef",
            "input_rows": 1, "rejected_rows": {}, "token_counts": {}, "allow_empty": false
        }))
        .unwrap();
        m.rejected_rows.insert(reason.to_owned(), 1);
        m
    }

    /// Every column of every shipped contract against every code the sealer has: a reason
    /// passes exactly when the sealer could have given it for that column.
    #[test]
    fn rejection_reasons_name_a_contract_column_and_its_codes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/datasets");
        let contracts = ContractSet::load_dir(&dir).unwrap();
        let codes: Vec<&str> = IDENTIFIER_REJECTIONS
            .iter()
            .copied()
            .chain([
                a::BLANK,
                a::INTEGER,
                a::NUMBER,
                a::BOOLEAN,
                a::DATE,
                a::TIMESTAMP,
                "other",
            ])
            .collect();
        let mut accepted = 0;
        for contract in contracts.iter() {
            for column in &contract.columns {
                for code in &codes {
                    let ok = check_rejections(
                        &with_reason(&format!("{}:{code}", column.name)),
                        contract,
                    )
                    .is_ok();
                    let expected = match column.role {
                        Role::Drop => false,
                        Role::Identifier => IDENTIFIER_REJECTIONS.contains(code),
                        Role::Attribute => {
                            *code == a::BLANK
                                || *code
                                    == match column.column_type {
                                        ColumnType::Utf8 => a::BLANK,
                                        ColumnType::Int64 => a::INTEGER,
                                        ColumnType::Float64 => a::NUMBER,
                                        ColumnType::Bool => a::BOOLEAN,
                                        ColumnType::Date => a::DATE,
                                        ColumnType::Timestamp => a::TIMESTAMP,
                                    }
                        }
                    };
                    assert_eq!(
                        ok,
                        expected,
                        "{}: {}:{code}",
                        contract.table_name(),
                        column.name
                    );
                    accepted += usize::from(ok);
                }
                // A sealed name that is not the export's column (a token name) is refused.
                if column.role == Role::Identifier && column.token_name() != column.name {
                    let token = format!("{}:blank", column.token_name());
                    assert!(
                        check_rejections(&with_reason(&token), contract).is_err(),
                        "{token}"
                    );
                }
            }
            for reason in ["nocolumn:blank", "blank", ":blank", "a:b:c"] {
                assert!(
                    check_rejections(&with_reason(reason), contract).is_err(),
                    "{reason}"
                );
            }
        }
        assert!(accepted > 50, "{accepted}");
    }
}
