//! Streaming CSV output: UTF-8 (optionally with BOM) or GBK, written to a temporary file
//! and renamed into place when complete.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::SynthError;

/// How a file's text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Utf8Bom,
    Gbk,
}

impl Encoding {
    /// WHATWG label (accepted by `encoding_rs::Encoding::for_label`).
    pub fn label(self) -> &'static str {
        match self {
            Encoding::Utf8 | Encoding::Utf8Bom => "UTF-8",
            Encoding::Gbk => "GBK",
        }
    }
    fn crlf(self) -> bool {
        self == Encoding::Gbk
    }
}

/// What was written to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSummary {
    /// `partner.dataset`, e.g. `hospital.visits`.
    pub dataset: String,
    /// File name inside the output directory.
    pub file: String,
    /// `UTF-8` or `GBK`.
    pub encoding: String,
    /// Whether the file starts with a UTF-8 byte-order mark.
    pub bom: bool,
    /// `LF` or `CRLF`.
    pub line_ending: String,
    pub columns: Vec<String>,
    /// Data rows, header excluded, duplicates included.
    pub rows: u64,
    /// Of which exact duplicates of an earlier row.
    pub duplicate_rows: u64,
    /// File size in bytes.
    pub bytes: u64,
}

pub struct CsvOut {
    dataset: String,
    file: String,
    encoding: Encoding,
    columns: Vec<String>,
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<File>,
    line: String,
    encoded: Vec<u8>,
    first_field: bool,
    rows: u64,
    duplicates: u64,
    bytes: u64,
    pending: Vec<(u64, Vec<u8>)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl CsvOut {
    pub fn create(
        dir: &Path,
        dataset: &str,
        encoding: Encoding,
        columns: &[&str],
    ) -> Result<Self, SynthError> {
        let file = format!("{dataset}.csv");
        let path = dir.join(&file);
        let tmp = dir.join(format!(".{file}.partial"));
        let f = File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = CsvOut {
            dataset: dataset.to_owned(),
            file,
            encoding,
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            tmp,
            path,
            out: BufWriter::with_capacity(1 << 20, f),
            line: String::with_capacity(512),
            encoded: Vec::with_capacity(1024),
            first_field: true,
            rows: 0,
            duplicates: 0,
            bytes: 0,
            pending: Vec::new(),
        };
        if encoding == Encoding::Utf8Bom {
            out.write_bytes(&[0xEF, 0xBB, 0xBF])?;
        }
        for c in columns {
            out.field(c);
        }
        out.end_line()?;
        Ok(out)
    }

    fn sep(&mut self) {
        if !self.first_field {
            self.line.push(',');
        }
        self.first_field = false;
    }

    /// Appends a text field, quoted only when it must be.
    pub fn field(&mut self, s: &str) {
        self.sep();
        if s.contains([',', '"', '\n', '\r']) {
            self.line.push('"');
            self.line.push_str(&s.replace('"', "\"\""));
            self.line.push('"');
        } else {
            self.line.push_str(s);
        }
    }

    /// Appends a formatted field that needs no quoting (numbers, dates, codes).
    pub fn field_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        self.sep();
        let _ = self.line.write_fmt(args);
    }

    /// Appends an amount in yuan from cents.
    pub fn field_money(&mut self, cents: u64) {
        self.field_fmt(format_args!("{}.{:02}", cents / 100, cents % 100));
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<(), SynthError> {
        self.out.write_all(b).map_err(io_err(&self.tmp))?;
        self.bytes += b.len() as u64;
        Ok(())
    }

    fn encode_line(&mut self) -> Result<(), SynthError> {
        self.line
            .push_str(if self.encoding.crlf() { "\r\n" } else { "\n" });
        self.encoded.clear();
        match self.encoding {
            Encoding::Utf8 | Encoding::Utf8Bom => {
                self.encoded.extend_from_slice(self.line.as_bytes())
            }
            Encoding::Gbk => {
                let mut encoder = encoding_rs::GBK.new_encoder();
                let max = encoder
                    .max_buffer_length_from_utf8_without_replacement(self.line.len())
                    .unwrap_or(self.line.len() * 4);
                self.encoded.reserve(max);
                let (result, _) = encoder.encode_from_utf8_to_vec_without_replacement(
                    &self.line,
                    &mut self.encoded,
                    true,
                );
                match result {
                    encoding_rs::EncoderResult::InputEmpty => {}
                    encoding_rs::EncoderResult::Unmappable(c) => {
                        return Err(SynthError::Unencodable {
                            file: self.file.clone(),
                            code: u32::from(c),
                        });
                    }
                    encoding_rs::EncoderResult::OutputFull => {
                        return Err(SynthError::Unencodable {
                            file: self.file.clone(),
                            code: 0,
                        });
                    }
                }
            }
        }
        self.line.clear();
        self.first_field = true;
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), SynthError> {
        self.encode_line()?;
        let bytes = std::mem::take(&mut self.encoded);
        let res = self.write_bytes(&bytes);
        self.encoded = bytes;
        res
    }

    /// Ends the current data row; `duplicate_after` writes an exact copy that many rows later.
    pub fn end_row(&mut self, duplicate_after: Option<u32>) -> Result<(), SynthError> {
        self.end_line()?;
        self.rows += 1;
        if let Some(delay) = duplicate_after {
            self.pending
                .push((self.rows + u64::from(delay), self.encoded.clone()));
        }
        while let Some(pos) = self.pending.iter().position(|(due, _)| *due <= self.rows) {
            let (_, copy) = self.pending.remove(pos);
            self.write_bytes(&copy)?;
            self.rows += 1;
            self.duplicates += 1;
        }
        Ok(())
    }

    /// Flushes pending duplicates, syncs and renames the file into place.
    pub fn finish(mut self) -> Result<FileSummary, SynthError> {
        for (_, copy) in std::mem::take(&mut self.pending) {
            self.write_bytes(&copy)?;
            self.rows += 1;
            self.duplicates += 1;
        }
        let file = self.out.into_inner().map_err(|e| SynthError::Write {
            path: self.tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.tmp))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))?;
        Ok(FileSummary {
            dataset: self.dataset,
            file: self.file,
            encoding: self.encoding.label().to_owned(),
            bom: self.encoding == Encoding::Utf8Bom,
            line_ending: if self.encoding.crlf() { "CRLF" } else { "LF" }.to_owned(),
            columns: self.columns,
            rows: self.rows,
            duplicate_rows: self.duplicates,
            bytes: self.bytes,
        })
    }
}
