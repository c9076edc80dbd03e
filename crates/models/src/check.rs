//! Checking a model against the catalog and the contracts.

use std::sync::Arc;

use arrow_schema::{DataType, Schema, SchemaRef};
use blindwatch_contract::ContractSet;
use blindwatch_engine::{CheckedPlan, Engine};
use blindwatch_policy::{OutputRule, check_column_uses};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;

use crate::model::{Model, ModelError, SUBJECT_COLUMN};

/// The name tier conditions see the query's result under.
pub(crate) const RESULT_TABLE: &str = "m";

/// A model that passed every check, with its plan. Only [`check`] builds one, and nothing
/// can change it afterwards: its fields are private.
pub struct CheckedModel {
    model: Model,
    plan: CheckedPlan,
    /// The query's result schema.
    schema: SchemaRef,
    /// Feature columns: every result column but the subject and the route.
    features: Vec<String>,
}

impl CheckedModel {
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model's query, planned and analysed.
    pub fn plan(&self) -> &CheckedPlan {
        &self.plan
    }

    /// The query's result schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Feature columns: every result column but the subject and the route.
    pub fn features(&self) -> &[String] {
        &self.features
    }
}

/// Evidence values are numbers, dates and times: alerts hold no text.
pub(crate) fn evidence_type(dt: &DataType) -> bool {
    dt.is_numeric()
        || matches!(
            dt,
            DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
        )
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// A session that knows only the result table `m` (no sealed table), for tier conditions.
pub(crate) fn result_session(
    schema: SchemaRef,
    batches: Vec<arrow_array::RecordBatch>,
) -> Result<SessionContext, String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| e.strip_backtrace())?;
    ctx.register_table(RESULT_TABLE, Arc::new(table))
        .map_err(|e| e.strip_backtrace())?;
    Ok(ctx)
}

pub(crate) fn query_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Evidence derived from a column whose contract declares `reveal_as` is shown only in the
/// same or coarser day buckets: the model must say so, and the value must be a day count or
/// a date. Returns the reasons it is not so.
fn reveal_granularity(
    model: &Model,
    evidence: &str,
    out: &blindwatch_engine::OutputColumn,
    schema: &Schema,
    contracts: &ContractSet,
) -> Vec<String> {
    let mut reasons = Vec::new();
    let declared = model.reveal_as.get(evidence);
    for source in &out.derived_from {
        let Some(allowed) = contracts
            .get(&source.table)
            .ok()
            .and_then(|c| c.sealed_column(&source.column))
            .and_then(|c| c.reveal_as.as_ref())
        else {
            continue;
        };
        let bounds = format!("{:?}", allowed.within_days);
        match declared {
            None => reasons.push(format!(
                "`{evidence}` derives from {source}, whose contract lets officers see it only within {bounds} days: declare reveal_as = {{ {evidence} = {{ within_days = {bounds} }} }} (those bounds or fewer)"
            )),
            Some(r) if !r.within(allowed) => reasons.push(format!(
                "`{evidence}` derives from {source}, whose contract allows only the day bounds {bounds}; within_days {:?} is finer: use those bounds or fewer",
                r.within_days
            )),
            Some(_) => {}
        }
    }
    if declared.is_some()
        && let Ok(f) = schema.field_with_name(evidence)
    {
        let dt = f.data_type();
        if !(dt.is_integer()
            || matches!(
                dt,
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
            ))
        {
            reasons.push(format!(
                "`{evidence}` is {dt}: a value shown in day buckets is a date, a time or a whole number of days"
            ));
        }
    }
    reasons
}

/// Checks `model` against the engine's catalog and contracts. Reports every problem, each
/// with the file, the field and the reason.
pub async fn check(model: Model, engine: &Engine) -> Result<CheckedModel, Vec<ModelError>> {
    let file = model.file.clone();
    let err = |field: &str, reason: String| ModelError::new(&file, field, reason);

    let plan = engine
        .plan(&model.query)
        .await
        .map_err(|e| vec![err("query", e.to_string())])?;
    let schema: SchemaRef = plan.schema();
    let analysis = plan.analysis();
    let mut errors = Vec::new();

    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut seen = std::collections::BTreeSet::new();
    for n in &names {
        if !seen.insert(*n) {
            errors.push(err(
                "query",
                format!("the result has two columns named `{n}`: alias them apart"),
            ));
        }
    }
    match schema.field_with_name(SUBJECT_COLUMN) {
        Err(_) => errors.push(err(
            "query",
            format!("the result has no `{SUBJECT_COLUMN}` column: select the subject's token column AS {SUBJECT_COLUMN}"),
        )),
        Ok(f) if !matches!(f.data_type(), DataType::FixedSizeBinary(16)) => errors.push(err(
            "query",
            format!("`{SUBJECT_COLUMN}` must be a token column (a {} identifier), not a computed value", model.subject),
        )),
        Ok(_) => {}
    }
    match schema.field_with_name(&model.route) {
        Err(_) => errors.push(err(
            "route",
            format!(
                "the query's result has no column `{}`: select the responsible station AS {}",
                model.route, model.route
            ),
        )),
        Ok(f) if !is_text(f.data_type()) => errors.push(err(
            "route",
            format!(
                "`{}` must be a text column holding a station code",
                model.route
            ),
        )),
        Ok(_) => {}
    }
    let features: Vec<String> = names
        .iter()
        .filter(|n| **n != SUBJECT_COLUMN && **n != model.route)
        .map(|n| n.to_string())
        .collect();

    for refusal in check_column_uses(
        analysis,
        engine.contracts(),
        &model.purpose,
        &OutputRule {
            subject: Some((SUBJECT_COLUMN, model.subject)),
        },
    ) {
        errors.push(err("query", refusal.to_string()));
    }

    for e in &model.evidence {
        let Some(out) = analysis.outputs.iter().find(|o| o.name == *e) else {
            errors.push(err(
                "evidence",
                format!("`{e}` is not a column of the query's result"),
            ));
            continue;
        };
        if !out.aggregated || !out.raw_from.is_empty() {
            errors.push(err(
                "evidence",
                format!("`{e}` is not an aggregate: evidence shows counts, sums, dates of last activity and the like, never a row's value"),
            ));
        }
        if let Ok(f) = schema.field_with_name(e)
            && !evidence_type(f.data_type())
        {
            errors.push(err(
                "evidence",
                format!(
                    "`{e}` is {}: evidence is a number, a date or a time, never text",
                    f.data_type()
                ),
            ));
        }
        errors.extend(
            reveal_granularity(&model, e, out, &schema, engine.contracts())
                .into_iter()
                .map(|reason| err("reveal_as", reason)),
        );
    }

    // Tier conditions see only the result's columns: a session with the result table alone.
    match result_session(schema.clone(), Vec::new()) {
        Err(e) => errors.push(err("tiers", e)),
        Ok(ctx) => {
            for (i, t) in model.tiers.iter().enumerate() {
                let sql = format!("SELECT ({}) AS holds FROM {RESULT_TABLE}", t.when);
                match ctx.sql_with_options(&sql, query_only()).await {
                    Err(e) => errors.push(err(
                        &format!("tiers[{i}].when"),
                        format!(
                            "does not plan over the result's columns ({}): {}",
                            names.join(", "),
                            e.strip_backtrace()
                        ),
                    )),
                    Ok(df) => {
                        let dt = df.schema().field(0).data_type();
                        if *dt != DataType::Boolean {
                            errors.push(err(
                                &format!("tiers[{i}].when"),
                                format!("is {dt}, not a boolean condition"),
                            ));
                        }
                    }
                }
            }
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CheckedModel {
        model,
        plan,
        schema: Arc::new(Schema::new(schema.fields().clone())),
        features,
    })
}
