//! The privacy gate for analysts' queries: aggregate-only SQL over the sealed tables.
//!
//! A query runs only when
//!
//! 1. it is one SELECT (no DDL, DML, COPY, EXPLAIN, functions of its own: the engine plans
//!    queries only);
//! 2. its result is the groups of one aggregate: group keys and aggregates, perhaps filtered
//!    (HAVING), sorted or limited — never rows, never a union or a window over rows;
//! 3. every column use is one the owning contract allows for the declared purpose (the
//!    column-use checker shared with the warning models: tokens only joined and counted,
//!    group keys group-allowed, aggregates aggregate-allowed, filters filter-allowed);
//! 4. the gate can count the people behind every group: the aggregated rows still carry
//!    identifier tokens.
//!
//! After running, every group with fewer than k distinct subjects is suppressed: the gate
//! adds `count(DISTINCT token)` for each identifier token column of the aggregated rows to
//! the aggregate (the analyst never sees these counts) and a group is released only when
//! the smallest of its non-zero counts is at least k. A group with no identifier at all is
//! suppressed: nothing shows it covers k people.
//!
//! A per-query gate cannot stop differencing across queries (two released counts that
//! differ by one person); that is why each query's digest and its released and suppressed
//! group counts go to the audit log.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use blindwatch_audit::{
    AuditEvent, AuditLog, AuditRecord, Principal as AuditPrincipal, Purpose, ReasonCode,
    Sha256Digest,
};
use blindwatch_contract::ContractSet;
use blindwatch_engine::{CheckedPlan, ColumnRef, Engine, EngineError};
use blindwatch_policy::{OutputRule, UseRefusal, check_column_uses};
use datafusion::common::Column;
use datafusion::functions_aggregate::expr_fn::count_distinct;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};

/// The smallest group a query may release when `policies/privacy.toml` does not say.
pub const DEFAULT_MIN_GROUP_SIZE: u64 = 10;

/// Prefix of the gate's own columns; a query may not use it.
const HIDDEN: &str = "__blindwatch_subjects_";

/// The gate's settings: `[query]` in `policies/privacy.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateSettings {
    /// k: a released group covers at least this many distinct subjects.
    pub min_group_size: u64,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            min_group_size: DEFAULT_MIN_GROUP_SIZE,
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct PrivacyFile {
    #[serde(default)]
    query: Option<QuerySection>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuerySection {
    min_group_size: Option<u64>,
}

impl GateSettings {
    /// Reads `[query]` of a privacy settings file (other sections belong to other parts).
    pub fn load(path: &Path) -> Result<GateSettings, QueryError> {
        let text = std::fs::read_to_string(path).map_err(|e| QueryError::Settings {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        GateSettings::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<GateSettings, QueryError> {
        let bad = |reason: String| QueryError::Settings {
            file: path.display().to_string(),
            reason,
        };
        let file: PrivacyFile = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        let k = file
            .query
            .and_then(|q| q.min_group_size)
            .unwrap_or(DEFAULT_MIN_GROUP_SIZE);
        if k < 2 {
            return Err(bad(format!(
                "[query] min_group_size = {k} would release single people; use 2 or more (default {DEFAULT_MIN_GROUP_SIZE})"
            )));
        }
        Ok(GateSettings { min_group_size: k })
    }
}

/// The rule a refused query breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The statement is not one SELECT that plans over the sealed tables.
    Plan,
    /// The result is not the groups of one aggregate.
    AggregateOnly,
    /// A column use the contracts do not allow for the purpose.
    ColumnUse,
    /// The aggregated rows carry no identifier, so no group can be shown to cover k people.
    NoSubjects,
}

impl Rule {
    /// A code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Plan => "query-plan",
            Rule::AggregateOnly => "aggregate-only",
            Rule::ColumnUse => "column-use",
            Rule::NoSubjects => "no-subjects",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{file}: {reason}")]
    Settings { file: String, reason: String },
    #[error("refused (rule query-plan): {0}")]
    Plan(#[source] EngineError),
    #[error("refused (rule aggregate-only): {0}")]
    NotAggregate(String),
    #[error(
        "refused (rule column-use): {}",
        .0.iter().map(UseRefusal::to_string).collect::<Vec<_>>().join("; ")
    )]
    ColumnUse(Vec<UseRefusal>),
    #[error(
        "refused (rule no-subjects): the rows this query aggregates carry no identifier token, so the gate cannot count the people behind each group; aggregate the tables directly instead of through a subquery that drops their identifier columns"
    )]
    NoSubjects,
    #[error("the query failed while running: {0}")]
    Execution(#[source] EngineError),
    #[error("the result column `{0}` has a type the gate does not release ({1}); aggregate it")]
    ResultType(String, String),
    #[error("the query was not answered because the audit log refused it: {0}")]
    Audit(String),
}

impl QueryError {
    /// The gate rule a refusal breaks (None for failures that are not refusals).
    pub fn rule(&self) -> Option<Rule> {
        match self {
            QueryError::Plan(_) => Some(Rule::Plan),
            QueryError::NotAggregate(_) => Some(Rule::AggregateOnly),
            QueryError::ColumnUse(_) => Some(Rule::ColumnUse),
            QueryError::NoSubjects => Some(Rule::NoSubjects),
            QueryError::Settings { .. }
            | QueryError::Execution(_)
            | QueryError::ResultType(..)
            | QueryError::Audit(_) => None,
        }
    }
}

/// A query that passed the gate's checks, rewritten to count each group's subjects.
#[derive(Debug)]
pub struct GatedQuery {
    plan: CheckedPlan,
    /// The analyst's result columns.
    columns: Vec<String>,
    /// The gate's subject counts, after the analyst's columns.
    hidden: usize,
}

impl GatedQuery {
    /// The columns the analyst asked for.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Per table, the columns an execution reads (the analyst's, and the identifier token
    /// columns the gate counts).
    pub fn released(
        &self,
    ) -> &std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        self.plan.released()
    }
}

/// One released value: a group key the contract lets be revealed, or an aggregate. There is
/// no binary variant: tokens cannot be carried.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cell::Null => f.write_str(""),
            Cell::Bool(b) => write!(f, "{b}"),
            Cell::Int(i) => write!(f, "{i}"),
            Cell::Float(x) => write!(f, "{x:.4}"),
            Cell::Text(s) => f.write_str(s),
        }
    }
}

/// What a gated query releases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// Released groups only, in the query's order.
    pub rows: Vec<Vec<Cell>>,
    /// Groups withheld because they cover fewer than `min_group_size` subjects.
    pub groups_suppressed: u64,
    pub min_group_size: u64,
}

impl QueryResult {
    pub fn groups_released(&self) -> u64 {
        self.rows.len() as u64
    }
}

/// Checks and runs `sql` for `principal`, and audits the outcome by the query's digest (never
/// its text): `QueryRun` with the released and suppressed group counts, or `QueryRefused`
/// with the rule. The access policies are the caller's to ask first (see
/// [`audit_refusal`] for their refusals).
pub async fn run_audited(
    engine: &Engine,
    sql: &str,
    purpose: &Purpose,
    settings: GateSettings,
    principal: &AuditPrincipal,
    audit: &mut AuditLog,
) -> Result<QueryResult, QueryError> {
    let outcome = match check(engine, engine.contracts(), sql, purpose.as_str()).await {
        Ok(q) => run(engine, &q, settings).await,
        Err(e) => Err(e),
    };
    let event = match &outcome {
        Ok(r) => AuditEvent::QueryRun {
            query_sha256: Sha256Digest::of(sql.as_bytes()),
            principal: principal.clone(),
            purpose: purpose.clone(),
            groups_released: r.groups_released(),
            groups_suppressed: r.groups_suppressed,
        },
        Err(e) => match e.rule() {
            Some(rule) => refusal(sql, purpose, principal, rule.code())?,
            None => return outcome,
        },
    };
    audit
        .append(&AuditRecord::now(principal.clone(), event))
        .and_then(|_| audit.checkpoint().map(|_| ()))
        .map_err(|e| QueryError::Audit(e.to_string()))?;
    outcome
}

/// Audits a query refused before the gate saw it (by the access policies, say).
pub fn audit_refusal(
    sql: &str,
    purpose: &Purpose,
    principal: &AuditPrincipal,
    rule: &str,
    audit: &mut AuditLog,
) -> Result<(), QueryError> {
    let event = refusal(sql, purpose, principal, rule)?;
    audit
        .append(&AuditRecord::now(principal.clone(), event))
        .and_then(|_| audit.checkpoint().map(|_| ()))
        .map_err(|e| QueryError::Audit(e.to_string()))
}

fn refusal(
    sql: &str,
    purpose: &Purpose,
    principal: &AuditPrincipal,
    rule: &str,
) -> Result<AuditEvent, QueryError> {
    Ok(AuditEvent::QueryRefused {
        query_sha256: Sha256Digest::of(sql.as_bytes()),
        principal: principal.clone(),
        purpose: purpose.clone(),
        rule: ReasonCode::new(rule).map_err(|e| QueryError::Audit(e.to_string()))?,
    })
}

/// Plans `sql` and checks it against the gate's rules and the contracts for `purpose`.
pub async fn check(
    engine: &Engine,
    contracts: &ContractSet,
    sql: &str,
    purpose: &str,
) -> Result<GatedQuery, QueryError> {
    if sql.contains(HIDDEN) {
        return Err(QueryError::NotAggregate(format!(
            "names starting with `{HIDDEN}` are the gate's own"
        )));
    }
    let checked = engine.plan(sql).await.map_err(QueryError::Plan)?;
    let analysis = checked.analysis();

    // Uses first: they name the column and the rule, which is what an analyst needs most.
    let refusals = check_column_uses(analysis, contracts, purpose, &OutputRule { subject: None });
    if !refusals.is_empty() {
        return Err(QueryError::ColumnUse(refusals));
    }
    for output in &analysis.outputs {
        let group_key = output.raw_from.iter().all(|c| {
            analysis
                .uses_of(&c.table, &c.column)
                .contains(&blindwatch_engine::ColumnUse::Group)
        });
        if !output.aggregated && !group_key {
            return Err(QueryError::NotAggregate(format!(
                "result column `{}` is neither a group key nor an aggregate",
                output.name
            )));
        }
    }

    let columns: Vec<String> = checked
        .logical_plan()
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let (rewritten, hidden) = count_subjects(checked.logical_plan(), &checked)?;
    let plan = checked.derive(rewritten).map_err(QueryError::Plan)?;
    Ok(GatedQuery {
        plan,
        columns,
        hidden,
    })
}

/// Runs a checked query and suppresses the groups under `settings.min_group_size` subjects.
pub async fn run(
    engine: &Engine,
    query: &GatedQuery,
    settings: GateSettings,
) -> Result<QueryResult, QueryError> {
    let batches = engine
        .execute(&query.plan)
        .await
        .map_err(QueryError::Execution)?;
    let shown = query.columns.len();
    let mut rows = Vec::new();
    let mut suppressed = 0u64;
    for batch in &batches {
        if batch.num_columns() != shown + query.hidden {
            return Err(QueryError::Execution(EngineError::Plan(
                "the gate's result has an unexpected width".into(),
            )));
        }
        let counts: Vec<&ArrayRef> = (shown..shown + query.hidden)
            .map(|i| batch.column(i))
            .collect();
        let cells: Vec<Vec<Cell>> = (0..shown)
            .map(|i| cells(&query.columns[i], batch.column(i)))
            .collect::<Result<_, _>>()?;
        for row in 0..batch.num_rows() {
            let smallest = counts
                .iter()
                .filter_map(|a| count_at(a, row))
                .filter(|n| *n > 0)
                .min();
            match smallest {
                Some(n) if n >= settings.min_group_size => {
                    rows.push(cells.iter().map(|c| c[row].clone()).collect());
                }
                _ => suppressed += 1,
            }
        }
    }
    tracing::info!(
        groups_released = rows.len(),
        groups_suppressed = suppressed,
        k = settings.min_group_size,
        "gated query ran"
    );
    Ok(QueryResult {
        columns: query.columns.clone(),
        rows,
        groups_suppressed: suppressed,
        min_group_size: settings.min_group_size,
    })
}

fn count_at(array: &ArrayRef, row: usize) -> Option<u64> {
    let a = array.as_any().downcast_ref::<arrow_array::Int64Array>()?;
    (!a.is_null(row)).then(|| a.value(row).max(0) as u64)
}

/// Rewrites the plan so that its one aggregate also counts the distinct values of every
/// identifier token column of the rows it aggregates, and carries those counts to the end.
fn count_subjects(
    plan: &LogicalPlan,
    checked: &CheckedPlan,
) -> Result<(LogicalPlan, usize), QueryError> {
    let shape = |what: &str| {
        QueryError::NotAggregate(format!(
            "the result must be the groups of one GROUP BY (or one aggregate over all rows), perhaps filtered, sorted or limited; this query's result comes from {what}"
        ))
    };
    match plan {
        LogicalPlan::Aggregate(agg) => {
            let input = agg.input.as_ref();
            let lineage = checked.lineage_of(input).map_err(QueryError::Plan)?;
            let mut extra = Vec::new();
            for (i, out) in lineage.outputs.iter().enumerate() {
                let (qualifier, field) = input.schema().qualified_field(i);
                let is_token = matches!(field.data_type(), DataType::FixedSizeBinary(16))
                    && !out.raw_from.is_empty()
                    && out
                        .raw_from
                        .iter()
                        .all(|c: &ColumnRef| checked.is_token_column(c));
                if is_token {
                    let column = Expr::Column(Column::from((qualifier, field)));
                    extra.push(count_distinct(column).alias(format!("{HIDDEN}{}", extra.len())));
                }
            }
            if extra.is_empty() {
                return Err(QueryError::NoSubjects);
            }
            let n = extra.len();
            let mut aggr_expr = agg.aggr_expr.clone();
            aggr_expr.extend(extra);
            let rewritten =
                Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr_expr)
                    .map_err(|e| QueryError::Plan(EngineError::Plan(e.to_string())))?;
            Ok((LogicalPlan::Aggregate(rewritten), n))
        }
        LogicalPlan::Projection(p) => {
            let (input, n) = count_subjects(&p.input, checked)?;
            let mut expr = p.expr.clone();
            expr.extend(
                (0..n).map(|i| Expr::Column(Column::new_unqualified(format!("{HIDDEN}{i}")))),
            );
            let projection = Projection::try_new(expr, Arc::new(input))
                .map_err(|e| QueryError::Plan(EngineError::Plan(e.to_string())))?;
            Ok((LogicalPlan::Projection(projection), n))
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_) => {
            let inputs = plan.inputs();
            let [only] = inputs.as_slice() else {
                return Err(shape("a node with several inputs"));
            };
            let (input, n) = count_subjects(only, checked)?;
            let rebuilt = plan
                .with_new_exprs(plan.expressions(), vec![input])
                .map_err(|e| QueryError::Plan(EngineError::Plan(e.to_string())))?;
            Ok((rebuilt, n))
        }
        LogicalPlan::Distinct(_) => Err(shape("SELECT DISTINCT; write GROUP BY with an aggregate")),
        LogicalPlan::Union(_) => Err(shape("a UNION of several results")),
        LogicalPlan::Window(_) => Err(shape("a window function over rows")),
        LogicalPlan::Join(_) => Err(shape("a join of results")),
        LogicalPlan::TableScan(_) | LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
            Err(shape("rows, not groups"))
        }
        other => Err(shape(
            other
                .display()
                .to_string()
                .split_whitespace()
                .next()
                .unwrap_or("this plan"),
        )),
    }
}

fn cells(name: &str, array: &ArrayRef) -> Result<Vec<Cell>, QueryError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
        UInt32Type, UInt64Type,
    };
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Int(i64::try_from(a.value(i)).unwrap_or(i64::MAX))
                });
            }
        }};
    }
    match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => {
            let floats = arrow_cast::cast(array, &DataType::Float64)
                .map_err(|e| QueryError::ResultType(name.to_owned(), e.to_string()))?;
            let a = floats.as_primitive::<Float64Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Float(a.value(i))
                });
            }
            let _ = std::marker::PhantomData::<Float32Type>;
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Bool(a.value(i))
                });
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_)
        | DataType::List(_)
        | DataType::LargeList(_)
        | DataType::Struct(_)
        | DataType::Map(..) => {
            return Err(QueryError::ResultType(
                name.to_owned(),
                array.data_type().to_string(),
            ));
        }
        _ => {
            // Text group keys, dates and times: shown as text.
            let text = arrow_cast::cast(array, &DataType::Utf8)
                .map_err(|e| QueryError::ResultType(name.to_owned(), e.to_string()))?;
            let a = text.as_string::<i32>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Cell::Null
                } else {
                    Cell::Text(a.value(i).to_owned())
                });
            }
        }
    }
    Ok(out)
}

/// The result as an aligned text table.
pub fn render_table(result: &QueryResult) -> String {
    let mut widths: Vec<usize> = result.columns.iter().map(|c| c.chars().count()).collect();
    let rendered: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|r| r.iter().map(Cell::to_string).collect())
        .collect();
    for r in &rendered {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = String::new();
    out.push_str(&line(&result.columns));
    out.push('\n');
    for r in &rendered {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_comes_from_the_query_section_and_is_never_below_two() {
        let p = Path::new("privacy.toml");
        assert_eq!(GateSettings::parse("", p).unwrap().min_group_size, 10);
        assert_eq!(
            GateSettings::parse(
                "[token_authority]\nmax_batch = 5\n[query]\nmin_group_size = 25\n",
                p
            )
            .unwrap()
            .min_group_size,
            25
        );
        let err = GateSettings::parse("[query]\nmin_group_size = 1\n", p).unwrap_err();
        assert!(err.to_string().contains("single people"), "{err}");
        assert!(GateSettings::parse("[query]\nk = 5\n", p).is_err());
    }
}
