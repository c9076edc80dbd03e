//! The sealing driver.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blindwatch_common::fsutil;
use blindwatch_contract::Contract;
use blindwatch_contract::Mode;
use blindwatch_crypto::Sha256;
use blindwatch_crypto::manifest::{
    MANIFEST_FORMAT, MAX_SEQUENCE, Manifest, TokenInfo, package_stem, schema_digest,
};
use blindwatch_crypto::sealing::{self, SealError as CryptoSealError};
use blindwatch_crypto::sign::SigningKey;
use blindwatch_crypto::token::{TokenError, Tokenizer};
use blindwatch_crypto::wrap::PlatformPublicKey;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::input::{self, InputFormat};
use crate::rows::{Converter, FinishError};

pub struct SealOptions<'a> {
    pub contract: &'a Contract,
    pub input: &'a Path,
    pub format: InputFormat,
    /// The partner doing the sealing; must own the contract.
    pub partner: &'a str,
    pub signing_key: &'a SigningKey,
    pub platform_key: &'a PlatformPublicKey,
    pub tokenizer: &'a dyn Tokenizer,
    pub sequence: u64,
    pub out_dir: &'a Path,
    /// Rows per record batch (and per tokenizer call).
    pub batch_rows: usize,
    /// Distinct identifiers the run keeps tokens of in memory (see
    /// [`crate::DEFAULT_TOKEN_CACHE_LIMIT`]); it bounds memory, never correctness.
    pub token_cache_limit: usize,
    /// Show a progress bar when standard error is a terminal.
    pub progress: bool,
}

/// What a seal may do beyond the defaults; each is written into the signed manifest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SealPermissions {
    /// Seal a contribution without rows. For a `replace` dataset it empties the dataset, so
    /// the platform refuses an empty replacement unless the manifest says it is meant.
    pub allow_empty: bool,
}

/// The two files a partner sends.
#[derive(Debug, Clone)]
pub struct Package {
    pub parquet: PathBuf,
    pub manifest: PathBuf,
}

/// Where the rejects reports of packages sealed into `out_dir` go: beside it, as
/// `<outbox>.rejects/`, so that the outbox holds only what is sent.
pub fn rejects_dir(out_dir: &Path) -> PathBuf {
    let mut name = out_dir
        .file_name()
        .map_or_else(|| std::ffi::OsString::from("outbox"), ToOwned::to_owned);
    name.push(".rejects");
    out_dir.with_file_name(name)
}

#[derive(Debug)]
pub struct SealOutcome {
    pub package: Package,
    pub manifest: Manifest,
    /// Row number and reason of each rejected row; stays with the partner, beside the
    /// outbox ([`rejects_dir`]), never in it.
    pub rejects_report: PathBuf,
    pub nulled_values: BTreeMap<String, u64>,
    pub distinct_tokenised: u64,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "partner `{partner}` cannot seal dataset {table}: its contract belongs to partner `{owner}`"
    )]
    NotOwner {
        partner: String,
        table: String,
        owner: String,
    },
    #[error("cannot read the export {path}: {source}")]
    Input { path: PathBuf, source: io::Error },
    #[error("the export cannot be sealed: {0}")]
    BadInput(String),
    #[error("{0}; fix the export or the contract and seal again")]
    Schema(String),
    #[error("tokenisation failed, nothing was written: {0}")]
    Token(#[from] TokenError),
    #[error("cannot set up encryption: {0}")]
    Crypto(#[from] CryptoSealError),
    #[error("package {0} already exists: use the next sequence number")]
    Exists(PathBuf),
    #[error(
        "sequence {0} is out of range: use a number from 1 to 2^63 - 1, higher than the last one sent"
    )]
    Sequence(u64),
    #[error(
        "no row of the export was sealed ({read} read, {rejected} rejected), and {table} is a replace dataset: \
         this contribution would empty it on the platform. Nothing was written; if the dataset really is \
         empty now, seal again with --allow-empty"
    )]
    Empty {
        table: String,
        read: u64,
        rejected: u64,
    },
    #[error("cannot write the package into {dir}: {source}")]
    Output { dir: PathBuf, source: io::Error },
    #[error("writing the sealed Parquet file failed: {0}")]
    Parquet(String),
    #[error(
        "internal check failed, nothing was written: column `{column}` would hold {written} tokens for {valid} valid identifiers read; report this as a bug"
    )]
    TokenCount {
        column: String,
        valid: u64,
        written: u64,
    },
    #[error(
        "internal check failed, nothing was written: {written} rows sealed, but {read} read and {rejected} rejected; report this as a bug"
    )]
    RowCount {
        written: u64,
        read: u64,
        rejected: u64,
    },
}

/// A writer that hashes and counts what passes through.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Makes the tokenizer's cache durable when sealing ends, successfully or not. A cache
/// that cannot be written costs only work on the next run, so it is a warning.
struct FlushOnDrop<'a>(&'a dyn Tokenizer);

impl Drop for FlushOnDrop<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.flush() {
            tracing::warn!(error = %e, "the token cache was not saved; the next seal asks for these values again");
        }
    }
}

/// Seals with the default permissions (no empty replacement).
pub fn seal(opts: &SealOptions<'_>) -> Result<SealOutcome, SealError> {
    seal_permitting(opts, SealPermissions::default())
}

/// Seals; `permissions` go into the signed manifest.
pub fn seal_permitting(
    opts: &SealOptions<'_>,
    permissions: SealPermissions,
) -> Result<SealOutcome, SealError> {
    let started = Instant::now();
    let contract = opts.contract;
    if !(1..=MAX_SEQUENCE).contains(&opts.sequence) {
        return Err(SealError::Sequence(opts.sequence));
    }
    if contract.partner != opts.partner {
        return Err(SealError::NotOwner {
            partner: opts.partner.to_owned(),
            table: contract.table_name(),
            owner: contract.partner.clone(),
        });
    }
    let stem = package_stem(&contract.partner, &contract.dataset, opts.sequence);
    let parquet_path = opts.out_dir.join(format!("{stem}.parquet"));
    let manifest_path = opts.out_dir.join(format!("{stem}.manifest.json"));
    let rejects_dir = rejects_dir(opts.out_dir);
    let rejects_path = rejects_dir.join(format!("{stem}.rejects.csv"));
    for p in [&parquet_path, &manifest_path] {
        if p.exists() {
            return Err(SealError::Exists(p.clone()));
        }
    }
    let out_err = |source| SealError::Output {
        dir: opts.out_dir.to_owned(),
        source,
    };

    let bar = (opts.progress && io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("sealing {}", contract.table_name()));
        bar
    });
    let mut opened = input::open(opts.input, opts.format, bar.as_ref())?;
    if let Some(bar) = &bar {
        bar.set_length(opened.total_bytes);
    }
    let mut converter = Converter::new(
        contract,
        &opened.header,
        opts.tokenizer,
        opts.token_cache_limit,
    )
    .map_err(SealError::Schema)?;
    // Whatever happens next, tokens obtained so far are kept for the next run.
    let _keep_tokens = FlushOnDrop(opts.tokenizer);

    let sealed_columns = contract.sealed_columns();
    let column_names: Vec<&str> = sealed_columns.iter().map(|c| c.name.as_str()).collect();
    let encryption = sealing::encryption_properties(opts.platform_key, &column_names)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .with_file_encryption_properties(encryption)
        .build();
    let tmp = fsutil::temp_beside(&parquet_path).map_err(out_err)?;
    let sink = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(out_err)?),
        hash: Sha256::default(),
        bytes: 0,
    };
    let mut writer = ArrowWriter::try_new(sink, converter.schema().clone(), Some(props))
        .map_err(|e| SealError::Parquet(e.to_string()))?;

    std::fs::create_dir_all(&rejects_dir).map_err(out_err)?;
    let rejects_tmp = fsutil::temp_beside(&rejects_path).map_err(out_err)?;
    let mut rejects = BufWriter::new(rejects_tmp.reopen().map_err(out_err)?);
    writeln!(rejects, "row,reason").map_err(out_err)?;
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    let (mut input_rows, mut row_count) = (0u64, 0u64);

    let flush =
        |converter: &mut Converter<'_>, writer: &mut ArrowWriter<_>| -> Result<u64, SealError> {
            if converter.rows_in_batch == 0 {
                return Ok(0);
            }
            let batch = converter.finish_batch().map_err(|e| match e {
                FinishError::Token(t) => SealError::Token(t),
                FinishError::Arrow(m) => SealError::Parquet(m),
                FinishError::Internal(m) => SealError::Parquet(m.to_owned()),
                FinishError::TokenCount {
                    column,
                    valid,
                    written,
                } => SealError::TokenCount {
                    column,
                    valid,
                    written,
                },
            })?;
            writer
                .write(&batch)
                .map_err(|e| SealError::Parquet(e.to_string()))?;
            Ok(batch.num_rows() as u64)
        };

    while opened.rows.next_row()? {
        input_rows += 1;
        let rows = &opened.rows;
        if let Err(reason) = converter.push_row(|i| rows.field(i)) {
            writeln!(rejects, "{input_rows},{reason}").map_err(out_err)?;
            *rejected.entry(reason).or_default() += 1;
        }
        if converter.rows_in_batch >= opts.batch_rows.max(1) {
            row_count += flush(&mut converter, &mut writer)?;
        }
    }
    row_count += flush(&mut converter, &mut writer)?;
    let rejected_total: u64 = rejected.values().sum();
    if row_count + rejected_total != input_rows {
        return Err(SealError::RowCount {
            written: row_count,
            read: input_rows,
            rejected: rejected_total,
        });
    }
    if row_count == 0 && contract.mode == Mode::Replace && !permissions.allow_empty {
        return Err(SealError::Empty {
            table: contract.table_name(),
            read: input_rows,
            rejected: rejected_total,
        });
    }
    let mut sink = writer
        .into_inner()
        .map_err(|e| SealError::Parquet(e.to_string()))?;
    sink.flush().map_err(out_err)?;
    let (file_sha256, file_bytes) = (sink.hash.finish_hex(), sink.bytes);
    drop(sink.inner);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        partner: contract.partner.clone(),
        dataset: contract.dataset.clone(),
        sequence: opts.sequence,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        file_name: format!("{stem}.parquet"),
        file_sha256,
        file_bytes,
        row_count,
        schema_digest: schema_digest(&sealed_columns),
        columns: sealed_columns,
        tokens: TokenInfo {
            mode: opts.tokenizer.mode(),
            key_id: opts.tokenizer.key_id().clone(),
        },
        platform_key_id: opts.platform_key.id().clone(),
        partner_key_id: opts.signing_key.id().clone(),
        input_rows,
        rejected_rows: rejected,
        token_counts: converter.token_counts(),
        allow_empty: permissions.allow_empty,
    };
    let envelope = manifest.sign(opts.signing_key);

    // The Parquet file first, the manifest last: a package without its manifest is ignored.
    fsutil::persist(tmp, &parquet_path).map_err(out_err)?;
    fsutil::write_new(&manifest_path, &envelope.to_json()).map_err(out_err)?;
    rejects.flush().map_err(out_err)?;
    drop(rejects);
    let _ = std::fs::remove_file(&rejects_path);
    fsutil::persist(rejects_tmp, &rejects_path).map_err(out_err)?;

    tracing::info!(
        table = %manifest.table_name(),
        sequence = manifest.sequence,
        rows = manifest.row_count,
        rejected = manifest.rejected_rows.values().sum::<u64>(),
        distinct_tokenised = converter.tokenised_distinct,
        "sealed"
    );
    Ok(SealOutcome {
        package: Package {
            parquet: parquet_path,
            manifest: manifest_path,
        },
        manifest,
        rejects_report: rejects_path,
        nulled_values: converter.nulled.into_iter().collect(),
        distinct_tokenised: converter.tokenised_distinct,
        elapsed: started.elapsed(),
    })
}
