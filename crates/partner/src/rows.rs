//! Turning text fields into typed, tokenised columns, one batch at a time.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float64Builder, Int64Builder,
    StringBuilder, TimestampSecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Schema};
use blindwatch_common::{IdentifierKind, NormaliseError, RawIdentifier, normalise};
use blindwatch_contract::{ColumnType, Contract, Role};
use blindwatch_crypto::manifest::attribute_rejection as reject;
use blindwatch_crypto::token::{Token, TokenError, Tokenizer};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use unicode_normalization::UnicodeNormalization;

/// What happens to one input column.
enum Action {
    Identifier {
        kind: IdentifierKind,
        required: bool,
        token_slot: usize,
        reveal_slot: Option<usize>,
    },
    Attribute {
        ty: ColumnType,
        required: bool,
        slot: usize,
    },
    Drop,
}

struct Step {
    input: usize,
    name: String,
    action: Action,
}

enum Builder {
    Token(FixedSizeBinaryBuilder),
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampSecondBuilder),
}

impl Builder {
    fn new(dt: &DataType) -> Builder {
        match dt {
            DataType::FixedSizeBinary(n) => Builder::Token(FixedSizeBinaryBuilder::new(*n)),
            DataType::Int64 => Builder::Int(Int64Builder::new()),
            DataType::Float64 => Builder::Float(Float64Builder::new()),
            DataType::Boolean => Builder::Bool(BooleanBuilder::new()),
            DataType::Date32 => Builder::Date(Date32Builder::new()),
            DataType::Timestamp(..) => Builder::Ts(TimestampSecondBuilder::new()),
            _ => Builder::Text(StringBuilder::new()),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Token(b) => Arc::new(b.finish()),
            Builder::Text(b) => Arc::new(b.finish()),
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
        }
    }
}

/// A typed attribute value, held only until the row is known to be accepted.
enum Value {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    Ts(i64),
}

/// The reason a row was rejected: column name and a value-free code.
pub(crate) type Reason = String;

/// Distinct values the per-run token cache holds by default. Beyond it the cache is emptied,
/// so memory stays bounded on exports of any size (values are then tokenised again, with
/// the same result). A batch never reads its tokens from the cache alone: see
/// [`Converter::finish_batch`].
pub const DEFAULT_TOKEN_CACHE_LIMIT: usize = 2_000_000;

pub(crate) struct Converter<'a> {
    schema: Arc<Schema>,
    steps: Vec<Step>,
    builders: Vec<Builder>,
    /// Identifiers of accepted rows waiting for their tokens, per token slot, in row order.
    pending: Vec<(usize, Option<RawIdentifier>)>,
    cache: HashMap<RawIdentifier, Token>,
    cache_limit: usize,
    tokenizer: &'a dyn Tokenizer,
    /// Per token slot: valid identifiers of accepted rows in this batch.
    valid_in_batch: Vec<u64>,
    /// Per token slot: non-null tokens written so far (the manifest's `token_counts`).
    tokens_written: Vec<u64>,
    pub rows_in_batch: usize,
    pub nulled: HashMap<Reason, u64>,
    pub tokenised_distinct: u64,
}

impl<'a> Converter<'a> {
    /// Maps the header onto the contract; refuses missing or unexpected columns.
    pub fn new(
        contract: &Contract,
        header: &[String],
        tokenizer: &'a dyn Tokenizer,
        cache_limit: usize,
    ) -> Result<Self, String> {
        let mut problems = Vec::new();
        for h in header {
            if !contract.columns.iter().any(|c| &c.name == h) {
                problems.push(format!("unexpected column `{h}`"));
            }
        }
        let schema = contract.sealed_schema();
        let slot = |name: &str| schema.index_of(name).ok();
        let mut steps = Vec::new();
        for c in &contract.columns {
            let Some(input) = header.iter().position(|h| h == &c.name) else {
                problems.push(format!("missing column `{}`", c.name));
                continue;
            };
            if header.iter().filter(|h| *h == &c.name).count() > 1 {
                problems.push(format!("column `{}` appears twice", c.name));
            }
            let action = match (c.role, c.kind) {
                (Role::Identifier, Some(kind)) => Action::Identifier {
                    kind,
                    required: c.required,
                    token_slot: slot(c.token_name()).ok_or("contract schema mismatch")?,
                    reveal_slot: if c.reveal { slot(&c.name) } else { None },
                },
                (Role::Attribute, _) => Action::Attribute {
                    ty: c.column_type,
                    required: c.required,
                    slot: slot(&c.name).ok_or("contract schema mismatch")?,
                },
                _ => Action::Drop,
            };
            steps.push(Step {
                input,
                name: c.name.clone(),
                action,
            });
        }
        if !problems.is_empty() {
            return Err(format!(
                "the export does not match contract {}: {}",
                contract.table_name(),
                problems.join(", ")
            ));
        }
        let builders = schema
            .fields()
            .iter()
            .map(|f| Builder::new(f.data_type()))
            .collect();
        let slots = schema.fields().len();
        Ok(Converter {
            schema,
            steps,
            builders,
            pending: Vec::new(),
            cache: HashMap::new(),
            cache_limit,
            tokenizer,
            valid_in_batch: vec![0; slots],
            tokens_written: vec![0; slots],
            rows_in_batch: 0,
            nulled: HashMap::new(),
            tokenised_distinct: 0,
        })
    }

    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Converts one row. On rejection nothing of the row is kept and the reason returned.
    pub fn push_row<'f>(&mut self, field: impl Fn(usize) -> Option<&'f str>) -> Result<(), Reason> {
        let mut idents: Vec<(usize, Option<RawIdentifier>, Option<usize>)> = Vec::new();
        let mut values: Vec<(usize, Value)> = Vec::new();
        let mut nulled: Vec<Reason> = Vec::new();
        for step in &self.steps {
            let raw = field(step.input).unwrap_or("");
            match step.action {
                Action::Drop => {}
                Action::Identifier {
                    kind,
                    required,
                    token_slot,
                    reveal_slot,
                } => {
                    let blank = raw.trim().is_empty();
                    match (blank, normalise(kind, raw)) {
                        (false, Ok(id)) => idents.push((token_slot, Some(id), reveal_slot)),
                        (true, _) if !required => idents.push((token_slot, None, reveal_slot)),
                        (true, _) => {
                            return Err(format!(
                                "{}:{}",
                                step.name,
                                NormaliseError::Blank.reason_code()
                            ));
                        }
                        (false, Err(e)) if required => {
                            return Err(format!("{}:{}", step.name, e.reason_code()));
                        }
                        (false, Err(e)) => {
                            nulled.push(format!("{}:{}", step.name, e.reason_code()));
                            idents.push((token_slot, None, reveal_slot));
                        }
                    }
                }
                Action::Attribute { ty, required, slot } => {
                    let value =
                        parse_attribute(ty, raw).map_err(|code| format!("{}:{code}", step.name))?;
                    if required && matches!(value, Value::Null) {
                        return Err(format!("{}:{}", step.name, reject::BLANK));
                    }
                    values.push((slot, value));
                }
            }
        }
        // Accepted: commit every column of the row.
        for (slot, value) in values {
            append_value(&mut self.builders[slot], value);
        }
        for (token_slot, id, reveal_slot) in idents {
            if let Some(Builder::Text(b)) = reveal_slot.and_then(|s| self.builders.get_mut(s)) {
                b.append_option(id.as_ref().map(RawIdentifier::reveal_value));
            }
            if id.is_some()
                && let Some(n) = self.valid_in_batch.get_mut(token_slot)
            {
                *n += 1;
            }
            self.pending.push((token_slot, id));
        }
        for reason in nulled {
            *self.nulled.entry(reason).or_default() += 1;
        }
        self.rows_in_batch += 1;
        Ok(())
    }

    /// Tokenises the batch's identifiers (each distinct value once) and returns the batch.
    ///
    /// Every valid identifier gets its token from the cache or from this batch's own
    /// tokenisation, never from the cache alone: the cache is trimmed only after the batch's
    /// columns are built. An identifier without a token is an error, never a null, and the
    /// non-null tokens of every column are counted against the valid values read.
    pub fn finish_batch(&mut self) -> Result<RecordBatch, FinishError> {
        let mut missing: Vec<&RawIdentifier> = Vec::new();
        let mut seen: HashSet<&RawIdentifier> = HashSet::new();
        for id in self.pending.iter().filter_map(|(_, id)| id.as_ref()) {
            if !self.cache.contains_key(id) && seen.insert(id) {
                missing.push(id);
            }
        }
        let tokens = self
            .tokenizer
            .tokenize(&missing)
            .map_err(FinishError::Token)?;
        if tokens.len() != missing.len() {
            return Err(FinishError::Token(TokenError::BadAnswer(format!(
                "{} tokens for {} values",
                tokens.len(),
                missing.len()
            ))));
        }
        self.tokenised_distinct += missing.len() as u64;
        let fresh: HashMap<RawIdentifier, Token> =
            missing.into_iter().cloned().zip(tokens).collect();
        for (slot, id) in self.pending.drain(..) {
            let Some(Builder::Token(b)) = self.builders.get_mut(slot) else {
                return Err(FinishError::Internal("token column has no binary builder"));
            };
            let Some(id) = id else {
                b.append_null();
                continue;
            };
            let token = self
                .cache
                .get(&id)
                .or_else(|| fresh.get(&id))
                .ok_or(FinishError::Internal("a valid identifier got no token"))?;
            b.append_value(token.as_bytes())
                .map_err(|_| FinishError::Internal("token length"))?;
        }
        if self.cache.len() + fresh.len() > self.cache_limit {
            self.cache.clear();
        }
        if fresh.len() <= self.cache_limit {
            self.cache.extend(fresh);
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        for (slot, column) in columns.iter().enumerate() {
            if !matches!(column.data_type(), DataType::FixedSizeBinary(_)) {
                continue;
            }
            let written = (column.len() - column.null_count()) as u64;
            let valid = self.valid_in_batch.get(slot).copied().unwrap_or(0);
            if written != valid {
                return Err(FinishError::TokenCount {
                    column: self.schema.field(slot).name().clone(),
                    valid,
                    written,
                });
            }
            if let Some(total) = self.tokens_written.get_mut(slot) {
                *total += written;
            }
        }
        self.valid_in_batch.iter_mut().for_each(|n| *n = 0);
        self.rows_in_batch = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| FinishError::Arrow(e.to_string()))
    }

    /// Non-null tokens written so far, per token column.
    pub fn token_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.schema
            .fields()
            .iter()
            .zip(&self.tokens_written)
            .filter(|(f, _)| matches!(f.data_type(), DataType::FixedSizeBinary(_)))
            .map(|(f, n)| (f.name().clone(), *n))
            .collect()
    }
}

#[derive(Debug)]
pub(crate) enum FinishError {
    Token(TokenError),
    Arrow(String),
    Internal(&'static str),
    /// A token column holds fewer (or more) tokens than valid identifiers were read.
    TokenCount {
        column: String,
        valid: u64,
        written: u64,
    },
}

fn append_value(builder: &mut Builder, value: Value) {
    match (builder, value) {
        (Builder::Text(b), Value::Text(s)) => b.append_value(s),
        (Builder::Int(b), Value::Int(v)) => b.append_value(v),
        (Builder::Float(b), Value::Float(v)) => b.append_value(v),
        (Builder::Bool(b), Value::Bool(v)) => b.append_value(v),
        (Builder::Date(b), Value::Date(v)) => b.append_value(v),
        (Builder::Ts(b), Value::Ts(v)) => b.append_value(v),
        (Builder::Text(b), _) => b.append_null(),
        (Builder::Int(b), _) => b.append_null(),
        (Builder::Float(b), _) => b.append_null(),
        (Builder::Bool(b), _) => b.append_null(),
        (Builder::Date(b), _) => b.append_null(),
        (Builder::Ts(b), _) => b.append_null(),
        (Builder::Token(b), _) => b.append_null(),
    }
}

/// Parses an attribute; the error is a value-free reason code.
fn parse_attribute(ty: ColumnType, raw: &str) -> Result<Value, &'static str> {
    let folded: String;
    let text = if raw.is_ascii() {
        raw.trim()
    } else {
        folded = raw.nfkc().collect();
        folded.trim()
    };
    if text.is_empty() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Utf8 => Value::Text(text.split_whitespace().collect::<Vec<_>>().join(" ")),
        ColumnType::Int64 => Value::Int(text.parse().map_err(|_| reject::INTEGER)?),
        ColumnType::Float64 => {
            let v: f64 = text.parse().map_err(|_| reject::NUMBER)?;
            if !v.is_finite() {
                return Err(reject::NUMBER);
            }
            Value::Float(v)
        }
        ColumnType::Bool => Value::Bool(match text.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "1" | "是" => true,
            "n" | "no" | "false" | "0" | "否" => false,
            _ => return Err(reject::BOOLEAN),
        }),
        ColumnType::Date => Value::Date(days_since_epoch(parse_date(text).ok_or(reject::DATE)?)),
        ColumnType::Timestamp => Value::Ts(
            parse_timestamp(text)
                .ok_or(reject::TIMESTAMP)?
                .and_utc()
                .timestamp(),
        ),
    })
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
}

fn parse_timestamp(text: &str) -> Option<NaiveDateTime> {
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y/%m/%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .or_else(|| parse_date(text).and_then(|d| d.and_hms_opt(0, 0, 0)))
}

/// 1970-01-01 counted from 0001-01-01 (day 1), as Arrow's `Date32` counts from it.
const UNIX_EPOCH_DAY_FROM_CE: i32 = 719_163;

fn days_since_epoch(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - UNIX_EPOCH_DAY_FROM_CE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_1970_like_arrow() {
        let day = |y, m, d| days_since_epoch(NaiveDate::from_ymd_opt(y, m, d).unwrap());
        assert_eq!(day(1970, 1, 1), 0);
        assert_eq!(day(1970, 1, 2), 1);
        assert_eq!(day(1969, 12, 31), -1);
        assert_eq!(day(2026, 11, 30), 20_787);
    }

    #[test]
    fn attributes_parse_or_give_a_code() {
        assert!(matches!(
            parse_attribute(ColumnType::Date, " 2026/11/03 "),
            Ok(Value::Date(_))
        ));
        assert!(matches!(
            parse_attribute(ColumnType::Date, "2026-13-01"),
            Err("bad_date")
        ));
        assert!(matches!(
            parse_attribute(ColumnType::Int64, "３"),
            Ok(Value::Int(3))
        ));
        assert!(matches!(
            parse_attribute(ColumnType::Float64, "NaN"),
            Err("bad_number")
        ));
        assert!(matches!(
            parse_attribute(ColumnType::Timestamp, "2026-11-03 08:00:01"),
            Ok(Value::Ts(_))
        ));
        assert!(
            matches!(parse_attribute(ColumnType::Utf8, "  a   b "), Ok(Value::Text(s)) if s == "a b")
        );
        assert!(matches!(
            parse_attribute(ColumnType::Utf8, "   "),
            Ok(Value::Null)
        ));
    }
}
