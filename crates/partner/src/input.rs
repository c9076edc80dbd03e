//! Reading partner exports as rows of text fields.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::seal::SealError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8 if the file starts with a UTF-8 BOM or its first 64 KiB are valid UTF-8,
    /// otherwise GB18030 (a superset of GBK).
    #[default]
    Auto,
    Utf8,
    /// GBK or GB18030.
    Gbk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// By extension: `.parquet` is Parquet, anything else CSV.
    #[default]
    Auto,
    Csv(Encoding),
    Parquet,
}

/// A source of rows: a header, then records of optional text fields.
pub(crate) enum Rows {
    Csv {
        reader: csv::Reader<Box<dyn Read>>,
        record: csv::StringRecord,
    },
    Parquet {
        batches: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
        current: Vec<StringArray>,
        row: usize,
        len: usize,
    },
}

pub(crate) struct Opened {
    pub header: Vec<String>,
    pub rows: Rows,
    /// For the progress bar.
    pub total_bytes: u64,
}

const SNIFF: usize = 64 * 1024;

fn detect(head: &[u8]) -> &'static encoding_rs::Encoding {
    if head.starts_with(b"\xEF\xBB\xBF") {
        return encoding_rs::UTF_8;
    }
    match std::str::from_utf8(head) {
        Ok(_) => encoding_rs::UTF_8,
        // A multi-byte character cut by the sniff window is still UTF-8.
        Err(e) if e.error_len().is_none() && head.len() - e.valid_up_to() < 4 => encoding_rs::UTF_8,
        Err(_) => encoding_rs::GB18030,
    }
}

pub(crate) fn open(
    path: &Path,
    format: InputFormat,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Opened, SealError> {
    let ioerr = |source| SealError::Input {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(ioerr)?;
    let total_bytes = file.metadata().map_err(ioerr)?.len();
    let is_parquet = match format {
        InputFormat::Parquet => true,
        InputFormat::Csv(_) => false,
        InputFormat::Auto => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet")),
    };
    if is_parquet {
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| SealError::BadInput(format!("not a readable Parquet file: {e}")))?;
        let header = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let batches = builder
            .with_batch_size(8192)
            .build()
            .map_err(|e| SealError::BadInput(format!("not a readable Parquet file: {e}")))?;
        return Ok(Opened {
            header,
            rows: Rows::Parquet {
                batches,
                current: Vec::new(),
                row: 0,
                len: 0,
            },
            total_bytes,
        });
    }
    let encoding = match format {
        InputFormat::Csv(Encoding::Utf8) => Encoding::Utf8,
        InputFormat::Csv(Encoding::Gbk) => Encoding::Gbk,
        _ => Encoding::Auto,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let enc = match encoding {
        Encoding::Utf8 => encoding_rs::UTF_8,
        Encoding::Gbk => encoding_rs::GB18030,
        Encoding::Auto => {
            let mut head = Vec::with_capacity(SNIFF);
            (&mut buffered)
                .take(SNIFF as u64)
                .read_to_end(&mut head)
                .map_err(ioerr)?;
            let enc = detect(&head);
            // Re-open to start from the beginning; the sniffed bytes are small.
            buffered = BufReader::with_capacity(256 * 1024, File::open(path).map_err(ioerr)?);
            enc
        }
    };
    let raw: Box<dyn Read> = match progress {
        Some(bar) => Box::new(bar.wrap_read(buffered)),
        None => Box::new(buffered),
    };
    let decoded: Box<dyn Read> = Box::new(
        encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(Some(enc))
            .bom_override(true)
            .strip_bom(true)
            .build(raw),
    );
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(decoded);
    let header = reader
        .headers()
        .map_err(|e| {
            SealError::BadInput(format!("cannot read the CSV header: {}", csv_reason(&e)))
        })?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
        .collect();
    Ok(Opened {
        header,
        rows: Rows::Csv {
            reader,
            record: csv::StringRecord::new(),
        },
        total_bytes,
    })
}

/// Describes a CSV error without quoting the data it failed on.
pub(crate) fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => format!(
            "row {} has {len} fields where the header has {expected_len}",
            pos.as_ref().map(|p| p.record()).unwrap_or(0)
        ),
        csv::ErrorKind::Utf8 { pos, .. } => format!(
            "row {} is not valid text in the declared encoding",
            pos.as_ref().map(|p| p.record()).unwrap_or(0)
        ),
        csv::ErrorKind::Io(io) => format!("read error: {}", io.kind()),
        _ => "malformed CSV".to_owned(),
    }
}

impl Rows {
    /// Advances to the next row; `false` at the end.
    pub fn next_row(&mut self) -> Result<bool, SealError> {
        match self {
            Rows::Csv { reader, record } => reader
                .read_record(record)
                .map_err(|e| SealError::BadInput(csv_reason(&e))),
            Rows::Parquet {
                batches,
                current,
                row,
                len,
            } => {
                *row += 1;
                while *row >= *len {
                    let Some(batch) = batches.next() else {
                        return Ok(false);
                    };
                    let batch = batch.map_err(|e| {
                        SealError::BadInput(format!("cannot read a Parquet batch: {e}"))
                    })?;
                    *current = batch
                        .columns()
                        .iter()
                        .map(|col| {
                            // Arrow cast errors can quote a value: they are never passed on.
                            let casted = arrow_cast::cast(col, &arrow_schema::DataType::Utf8)
                                .map_err(|_| {
                                    SealError::BadInput(
                                        "a Parquet column cannot be read as text".into(),
                                    )
                                })?;
                            casted
                                .as_any()
                                .downcast_ref::<StringArray>()
                                .cloned()
                                .ok_or_else(|| {
                                    SealError::BadInput(
                                        "a Parquet column cannot be read as text".into(),
                                    )
                                })
                        })
                        .collect::<Result<_, _>>()?;
                    *len = batch.num_rows();
                    *row = 0;
                }
                Ok(true)
            }
        }
    }

    /// Field `i` of the current row; `None` for a missing or null value.
    pub fn field(&self, i: usize) -> Option<&str> {
        match self {
            Rows::Csv { record, .. } => record.get(i),
            Rows::Parquet { current, row, .. } => {
                let col = current.get(i)?;
                (!col.is_null(*row)).then(|| col.value(*row))
            }
        }
    }
}
