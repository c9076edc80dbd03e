//! Evaluating a checked model: run the query through the engine, decide tiers, pseudonymise.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampSecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use blindwatch_alerts::{DayBucket, Evidence, EvidenceValue, Finding, Pseudonymizer};
use blindwatch_audit::StationId;
use blindwatch_engine::{Engine, EngineError};
use chrono::{DateTime, Utc};
use datafusion::prelude::DataFrame;

use crate::approval::ApprovedModel;
use crate::check::{RESULT_TABLE, evidence_type, query_only, result_session};
use crate::model::SUBJECT_COLUMN;

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("model {model}: {source}")]
    Engine {
        model: String,
        #[source]
        source: EngineError,
    },
    #[error(
        "model {model}: evaluating the tier conditions failed ({source}); nothing was recorded"
    )]
    Tiers {
        model: String,
        #[source]
        source: TierFailure,
    },
}

/// Why tier evaluation failed (its text never quotes values).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TierFailure(String);

/// One run's result, before it is recorded.
#[derive(Debug, Default)]
pub struct Evaluation {
    /// Subjects that matched a tier, pseudonymised.
    pub findings: Vec<Finding>,
    /// Rows the query returned.
    pub rows: u64,
    /// Rows without a subject (a NULL token: the identifier was blank at the source).
    pub without_subject: u64,
    /// Rows that matched a tier but name no valid station: they cannot be routed.
    pub unroutable: u64,
    /// Subjects with more than one result row: none of their rows counts (the model should
    /// group by the subject). Not an error, so a run's success never depends on the data.
    pub duplicates: u64,
}

fn tier_failure(model: &str, what: String) -> EvaluateError {
    EvaluateError::Tiers {
        model: model.to_owned(),
        source: TierFailure(what),
    }
}

/// What one result row comes to.
enum RowOutcome {
    NoTier,
    Unroutable,
    Alert(Finding),
}

/// Evaluates `approved` with `engine` as of `now` (what `current_date` means in the query
/// and the tier conditions).
pub async fn evaluate(
    engine: &Engine,
    approved: &ApprovedModel,
    pseudonyms: &Pseudonymizer,
    now: DateTime<Utc>,
) -> Result<Evaluation, EvaluateError> {
    let checked = approved.checked();
    let model = checked.model();
    let batches = engine
        .execute_at(checked.plan(), Some(now))
        .await
        .map_err(|source| EvaluateError::Engine {
            model: model.id.clone(),
            source,
        })?;
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .unwrap_or_else(|| checked.schema().clone());
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();

    // Tiers over the result, in memory, in a session that holds nothing else.
    let ctx = result_session(schema, batches).map_err(|e| tier_failure(&model.id, e))?;
    let mut select = vec!["*".to_owned()];
    for (i, t) in model.tiers.iter().enumerate() {
        select.push(format!("coalesce(({}), false) AS __tier_{i}", t.when));
    }
    let sql = format!("SELECT {} FROM {RESULT_TABLE}", select.join(", "));
    let df = ctx
        .sql_with_options(&sql, query_only())
        .await
        .map_err(|_| tier_failure(&model.id, "a tier condition does not plan".into()))?;
    let (state, plan) = df.into_parts();
    let mut state = state;
    state.execution_props_mut().query_execution_start_time = Some(now);
    let tiered = DataFrame::new(state, plan).collect().await.map_err(|_| {
        tier_failure(
            &model.id,
            "a tier condition failed to evaluate (check casts and arithmetic)".into(),
        )
    })?;

    let mut out = Evaluation {
        rows: rows as u64,
        ..Evaluation::default()
    };
    let mut rows_of: HashMap<String, u32> = HashMap::new();
    let mut outcomes = Vec::new();
    let kind = model.subject.as_str();
    let today = now.date_naive();
    for batch in &tiered {
        let column = |name: &str| -> Result<&ArrayRef, EvaluateError> {
            batch.column_by_name(name).ok_or_else(|| {
                tier_failure(&model.id, format!("the result lost its `{name}` column"))
            })
        };
        let subject = column(SUBJECT_COLUMN)?
            .as_fixed_size_binary_opt()
            .ok_or_else(|| tier_failure(&model.id, "the subject is not a token column".into()))?;
        let route = arrow_cast::cast(column(&model.route)?, &DataType::Utf8)
            .map_err(|_| tier_failure(&model.id, "the route column is not text".into()))?;
        let route = route.as_string::<i32>();
        let holds: Vec<_> = (0..model.tiers.len())
            .map(|i| {
                column(&format!("__tier_{i}")).and_then(|c| {
                    c.as_boolean_opt().cloned().ok_or_else(|| {
                        tier_failure(&model.id, "a tier condition is not boolean".into())
                    })
                })
            })
            .collect::<Result<_, _>>()?;
        let evidence_columns: Vec<(&String, ArrayRef)> = model
            .evidence
            .iter()
            .map(|e| column(e).map(|c| (e, c.clone())))
            .collect::<Result<_, _>>()?;

        for row in 0..batch.num_rows() {
            if subject.is_null(row) {
                out.without_subject += 1;
                continue;
            }
            let token = subject.value(row);
            let (key, pseudonym) = pseudonyms.subject(kind, token);
            *rows_of.entry(key.as_str().to_owned()).or_default() += 1;
            let Some(level) = model
                .tiers
                .iter()
                .zip(&holds)
                .find(|(_, h)| h.value(row))
                .map(|(t, _)| t.level)
            else {
                outcomes.push((key, RowOutcome::NoTier));
                continue;
            };
            let station = (!route.is_null(row))
                .then(|| StationId::new(route.value(row)).ok())
                .flatten();
            let Some(station) = station else {
                outcomes.push((key, RowOutcome::Unroutable));
                continue;
            };
            let mut evidence = Evidence::new();
            for (name, col) in &evidence_columns {
                let value = match model.reveal_as.get(*name) {
                    Some(r) => days_before(col, row, today)
                        .and_then(|d| DayBucket::of(d, &r.within_days))
                        .map(EvidenceValue::Days),
                    None => evidence_value(col, row),
                };
                evidence.insert((*name).clone(), value);
            }
            outcomes.push((
                key.clone(),
                RowOutcome::Alert(Finding {
                    subject: key,
                    pseudonym,
                    station,
                    tier: level,
                    evidence,
                }),
            ));
        }
    }
    out.duplicates = rows_of.values().filter(|n| **n > 1).count() as u64;
    for (key, outcome) in outcomes {
        if rows_of.get(key.as_str()).is_some_and(|n| *n > 1) {
            continue;
        }
        match outcome {
            RowOutcome::NoTier => {}
            RowOutcome::Unroutable => out.unroutable += 1,
            RowOutcome::Alert(f) => out.findings.push(f),
        }
    }
    tracing::info!(
        model = %model.id,
        version = model.version,
        rows = out.rows,
        alerts = out.findings.len(),
        without_subject = out.without_subject,
        unroutable = out.unroutable,
        duplicates = out.duplicates,
        "model evaluated"
    );
    Ok(out)
}

/// How many days before `today` a bucketed evidence value lies: a date's or time's distance,
/// an integer as a day count. The checker allows only those types to be bucketed.
fn days_before(col: &ArrayRef, row: usize, today: chrono::NaiveDate) -> Option<i64> {
    match evidence_value(col, row)? {
        EvidenceValue::Int(n) => Some(n),
        EvidenceValue::Date(d) => Some((today - d).num_days()),
        EvidenceValue::Time(t) => Some((today - t.date()).num_days()),
        EvidenceValue::Float(_) | EvidenceValue::Days(_) => None,
    }
}

/// One evidence value; types were checked to be numbers, dates or times.
fn evidence_value(col: &ArrayRef, row: usize) -> Option<EvidenceValue> {
    if col.is_null(row) || !evidence_type(col.data_type()) {
        return None;
    }
    let one = col.slice(row, 1);
    let dt = col.data_type();
    if dt.is_integer() {
        let v = arrow_cast::cast(&one, &DataType::Int64).ok()?;
        return Some(EvidenceValue::Int(v.as_primitive::<Int64Type>().value(0)));
    }
    match dt {
        DataType::Date32 | DataType::Date64 => {
            let v = arrow_cast::cast(&one, &DataType::Date32).ok()?;
            let days = v.as_primitive::<arrow_array::types::Date32Type>().value(0);
            chrono::NaiveDate::from_num_days_from_ce_opt(days + 719_163).map(EvidenceValue::Date)
        }
        DataType::Timestamp(..) => {
            let v = arrow_cast::cast(&one, &DataType::Timestamp(TimeUnit::Second, None)).ok()?;
            let secs = v.as_primitive::<TimestampSecondType>().value(0);
            DateTime::from_timestamp(secs, 0).map(|t| EvidenceValue::Time(t.naive_utc()))
        }
        _ => {
            let v = arrow_cast::cast(&one, &DataType::Float64).ok()?;
            Some(EvidenceValue::Float(
                v.as_primitive::<Float64Type>().value(0),
            ))
        }
    }
}
