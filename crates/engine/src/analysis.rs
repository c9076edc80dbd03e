//! Plan analysis: how a query uses every base-table column it touches.
//!
//! [`analyze`] walks a DataFusion [`LogicalPlan`] (as planned from SQL, before optimisation)
//! and reports, for every column of every scanned table, the ways it is used — the facts the
//! model checker and the aggregate-only query gate compare with the contracts' `uses`:
//!
//! - [`ColumnUse::Join`]: compared with a column of another relation (equi-join key, join
//!   filter, a WHERE comparison across relations, a correlated subquery predicate,
//!   `IN (subquery)`);
//! - [`ColumnUse::Filter`]: compared with a constant or tested (WHERE, HAVING, ON conditions on
//!   one side, CASE conditions, aggregate `FILTER (WHERE ..)`);
//! - [`ColumnUse::Group`]: a GROUP BY key, a DISTINCT key, a window PARTITION BY key;
//! - [`ColumnUse::Order`]: an ORDER BY key (of the query, an aggregate or a window);
//! - [`ColumnUse::Aggregate`]: the argument of an aggregate function (name, DISTINCT flag);
//! - [`ColumnUse::Window`]: the argument of a window function — its result is per row;
//! - [`ColumnUse::Output`]: the column's value, or the outcome of a test on it, reaches the
//!   final result without passing through an aggregate.
//!
//! It also follows lineage: which base columns each output column derives from, through
//! projections, aliases, subqueries, CTEs, unions, joins, windows and aggregates.
//!
//! Lineage distinguishes a value that *flows* into a result (`SELECT amount * 2`) from one
//! that only *decides* it (`CASE WHEN department = 'x' THEN 1 ELSE 0 END`): both reach the
//! output when not aggregated (the result reveals something about each), but inside an
//! aggregate only the flowing values count as aggregated (`sum(CASE WHEN d = 'x' THEN 1 END)`
//! filters on `d` and aggregates nothing of it).
//!
//! Tokens never mix keys: whenever token values of two different token domains (mode + key)
//! are compared, combined or unioned, the analysis fails with [`AnalysisError::MixedTokens`].
//!
//! Anything the analysis does not understand is refused, never guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, JoinType};
use datafusion::logical_expr::expr::{
    AggregateFunction, InSubquery, SetComparison, WindowFunction,
};
use datafusion::logical_expr::utils::grouping_set_to_exprlist;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, LogicalPlan, Operator, Subquery};

/// A column of a sealed table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnRef {
    /// `<partner>.<dataset>`.
    pub table: String,
    /// The column of the sealed file (a token column by its token name).
    pub column: String,
}

impl ColumnRef {
    pub fn new(table: impl Into<String>, column: impl Into<String>) -> ColumnRef {
        ColumnRef {
            table: table.into(),
            column: column.into(),
        }
    }
}

impl fmt::Display for ColumnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

impl serde::Serialize for ColumnRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One way a query uses a column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(tag = "use", rename_all = "snake_case")]
pub enum ColumnUse {
    /// Compared with a column of another relation.
    Join,
    /// Compared with a constant or tested.
    Filter,
    /// A grouping key (GROUP BY, DISTINCT, window PARTITION BY).
    Group,
    /// A sort key (ORDER BY of the query, an aggregate or a window).
    Order,
    /// The argument of an aggregate function.
    Aggregate { function: String, distinct: bool },
    /// The argument of a window function (its result is per row, not per group).
    Window { function: String },
    /// Reaches the result unaggregated (its value, or the outcome of a test on it).
    Output,
}

impl fmt::Display for ColumnUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnUse::Join => f.write_str("join"),
            ColumnUse::Filter => f.write_str("filter"),
            ColumnUse::Group => f.write_str("group"),
            ColumnUse::Order => f.write_str("order"),
            ColumnUse::Aggregate {
                function,
                distinct: true,
            } => write!(f, "aggregate ({function} distinct)"),
            ColumnUse::Aggregate {
                function,
                distinct: false,
            } => write!(f, "aggregate ({function})"),
            ColumnUse::Window { function } => write!(f, "window ({function})"),
            ColumnUse::Output => f.write_str("output"),
        }
    }
}

/// One column of the query's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutputColumn {
    pub name: String,
    /// Every base column the value is computed from (directly, through a test, or through an
    /// aggregate).
    pub derived_from: BTreeSet<ColumnRef>,
    /// The subset that reaches the value without passing through an aggregate.
    pub raw_from: BTreeSet<ColumnRef>,
    /// The value is computed by aggregate functions only (`count(*)`, `max(d) + 1`); false
    /// for a constant.
    pub aggregated: bool,
}

/// What a plan reads and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanAnalysis {
    /// Every table the plan scans (even when it reads no column of it, as `count(*)` does).
    pub tables: BTreeSet<String>,
    /// Every base column the plan uses, with all its uses.
    pub uses: BTreeMap<ColumnRef, BTreeSet<ColumnUse>>,
    /// The result's columns, in order.
    pub outputs: Vec<OutputColumn>,
}

impl PlanAnalysis {
    /// The uses of one column (empty when the plan does not use it).
    pub fn uses_of(&self, table: &str, column: &str) -> BTreeSet<ColumnUse> {
        self.uses
            .get(&ColumnRef::new(table, column))
            .cloned()
            .unwrap_or_default()
    }

    /// The columns the plan reads: exactly the ones whose keys an execution releases.
    pub fn columns_read(&self) -> BTreeSet<ColumnRef> {
        self.uses.keys().cloned().collect()
    }

    /// The columns read, by table.
    pub fn columns_by_table(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = self
            .tables
            .iter()
            .map(|t| (t.clone(), BTreeSet::new()))
            .collect();
        for c in self.uses.keys() {
            out.entry(c.table.clone())
                .or_default()
                .insert(c.column.clone());
        }
        out
    }
}

/// The key domain of token columns: tokens made under different modes or keys never match,
/// so they must never be joined or mixed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct TokenDomain {
    pub mode: String,
    pub key_id: String,
}

impl fmt::Display for TokenDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tokens under key {}", self.mode, self.key_id)
    }
}

/// Token values of two token domains meet in a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the query combines token column {left} ({left_domain}) with token column {right} ({right_domain}): \
     tokens made under different modes or keys never match, so they cannot be joined, compared or mixed; \
     have the partners tokenise both datasets under the same key"
)]
pub struct MixedTokens {
    pub left: ColumnRef,
    pub left_domain: TokenDomain,
    pub right: ColumnRef,
    pub right_domain: TokenDomain,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    MixedTokens(Box<MixedTokens>),
    #[error("only queries (SELECT) can run on sealed data, not {0}")]
    NotAQuery(String),
    #[error("{0} is not supported in queries over sealed data; rewrite the query without it")]
    Unsupported(String),
    #[error("the query plan could not be analysed ({0}); the query was not run")]
    Internal(String),
}

/// Analyses `plan`; `token_domain` tells the token domain of a column, `None` for a column
/// that does not hold tokens.
pub fn analyze(
    plan: &LogicalPlan,
    token_domain: &dyn Fn(&ColumnRef) -> Option<TokenDomain>,
) -> Result<PlanAnalysis, AnalysisError> {
    let mut walker = Walker {
        token_domain,
        next_scan: 0,
        out: PlanAnalysis::default(),
        compared: BTreeSet::new(),
    };
    let infos = walker.plan(plan, None)?;
    let fields = plan.schema().fields();
    if fields.len() != infos.len() {
        return Err(AnalysisError::Internal("result width".into()));
    }
    let mut outputs = Vec::with_capacity(infos.len());
    for (field, info) in fields.iter().zip(&infos) {
        let shown: BTreeSet<Src> = info.raw.union(&info.ctrl).cloned().collect();
        for s in &shown {
            walker.add_use(s, ColumnUse::Output);
        }
        outputs.push(OutputColumn {
            name: field.name().clone(),
            derived_from: info
                .raw
                .iter()
                .chain(&info.ctrl)
                .chain(&info.agg)
                .map(|s| s.col.clone())
                .collect(),
            raw_from: shown.into_iter().map(|s| s.col).collect(),
            aggregated: info.aggregated,
        });
    }
    walker.out.outputs = outputs;
    Ok(walker.out)
}

/// A base column as read by one particular scan (a self-join scans a table twice).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Src {
    scan: usize,
    col: ColumnRef,
}

/// What is known about one column of an intermediate result.
#[derive(Debug, Clone, Default)]
struct Info {
    /// Base columns whose values flow into this value unaggregated.
    raw: BTreeSet<Src>,
    /// Base columns that only decide this value (through a comparison or a test), unaggregated.
    ctrl: BTreeSet<Src>,
    /// Base columns that reach this value only through an aggregate.
    agg: BTreeSet<Src>,
    /// Computed by aggregates only.
    aggregated: bool,
    /// Depends on no column at all.
    constant: bool,
    /// Token domains whose token values flow into this value, with one column of each.
    tokens: BTreeMap<TokenDomain, ColumnRef>,
}

impl Info {
    fn constant() -> Info {
        Info {
            constant: true,
            ..Info::default()
        }
    }

    fn shown(&self) -> impl Iterator<Item = &Src> {
        self.raw.iter().chain(&self.ctrl)
    }

    fn scans(&self) -> BTreeSet<usize> {
        self.shown().map(|s| s.scan).collect()
    }

    /// A boolean outcome of a test on this value: it carries no token values.
    fn into_test(self) -> Info {
        let Info {
            raw,
            mut ctrl,
            agg,
            aggregated,
            constant,
            ..
        } = self;
        ctrl.extend(raw);
        Info {
            raw: BTreeSet::new(),
            ctrl,
            agg,
            aggregated,
            constant,
            tokens: BTreeMap::new(),
        }
    }
}

/// Merges the infos of the parts of a scalar expression; fails when token values of two
/// domains would meet.
fn merge(parts: impl IntoIterator<Item = Info>, keep_tokens: bool) -> Result<Info, AnalysisError> {
    let mut out = Info {
        constant: true,
        aggregated: true,
        ..Info::default()
    };
    let mut any_column = false;
    for p in parts {
        out.raw.extend(p.raw);
        out.ctrl.extend(p.ctrl);
        out.agg.extend(p.agg);
        if !p.constant {
            any_column = true;
            out.constant = false;
            out.aggregated &= p.aggregated;
        }
        for (domain, col) in p.tokens {
            add_token(&mut out.tokens, domain, col)?;
        }
    }
    if !any_column {
        out.aggregated = false;
    }
    if !keep_tokens {
        out.tokens.clear();
    }
    Ok(out)
}

fn add_token(
    tokens: &mut BTreeMap<TokenDomain, ColumnRef>,
    domain: TokenDomain,
    col: ColumnRef,
) -> Result<(), AnalysisError> {
    if let Some((other_domain, other_col)) = tokens.iter().find(|(d, _)| **d != domain) {
        return Err(AnalysisError::MixedTokens(Box::new(MixedTokens {
            left: other_col.clone(),
            left_domain: other_domain.clone(),
            right: col,
            right_domain: domain,
        })));
    }
    tokens.entry(domain).or_insert(col);
    Ok(())
}

/// Token values of `parts` meet (are compared or joined): they must share one domain.
fn check_tokens(parts: &[&Info]) -> Result<(), AnalysisError> {
    let mut tokens = BTreeMap::new();
    for p in parts {
        for (d, c) in &p.tokens {
            add_token(&mut tokens, d.clone(), c.clone())?;
        }
    }
    Ok(())
}

/// Columns visible to an expression: the node's inputs, then enclosing queries (for the
/// outer references of a correlated subquery).
struct Scope<'a> {
    frames: Vec<(&'a DFSchema, &'a [Info])>,
    outer: Option<&'a Scope<'a>>,
}

impl Scope<'_> {
    fn local(&self, col: &Column) -> Result<Info, AnalysisError> {
        for (schema, infos) in &self.frames {
            if let Some(i) = schema.maybe_index_of_column(col) {
                return infos
                    .get(i)
                    .cloned()
                    .ok_or_else(|| AnalysisError::Internal("column index".into()));
            }
        }
        Err(AnalysisError::Internal(format!(
            "column `{}` not found in its input",
            col.name
        )))
    }

    fn outer(&self, col: &Column) -> Result<Info, AnalysisError> {
        let mut scope = self.outer;
        while let Some(s) = scope {
            if let Ok(info) = s.local(col) {
                return Ok(info);
            }
            scope = s.outer;
        }
        Err(AnalysisError::Internal(format!(
            "outer reference `{}` not found",
            col.name
        )))
    }
}

struct Walker<'t> {
    token_domain: &'t dyn Fn(&ColumnRef) -> Option<TokenDomain>,
    next_scan: usize,
    out: PlanAnalysis,
    /// Columns compared or tested while walking the current predicate.
    compared: BTreeSet<Src>,
}

fn is_test(op: &Operator) -> bool {
    use Operator::*;
    matches!(
        op,
        Eq | NotEq
            | Lt
            | LtEq
            | Gt
            | GtEq
            | IsDistinctFrom
            | IsNotDistinctFrom
            | RegexMatch
            | RegexIMatch
            | RegexNotMatch
            | RegexNotIMatch
            | LikeMatch
            | ILikeMatch
            | NotLikeMatch
            | NotILikeMatch
    )
}

/// Aggregates whose result carries no token values, whatever their argument.
fn counts_only(function: &str) -> bool {
    matches!(function, "count" | "approx_distinct" | "regr_count")
}

impl Walker<'_> {
    fn add_use(&mut self, src: &Src, u: ColumnUse) {
        self.out.uses.entry(src.col.clone()).or_default().insert(u);
    }

    /// Records a comparison among `parts`: a join when the values compared come from more
    /// than one relation (scan), otherwise a filter; token values of different domains may
    /// not meet.
    fn compare(&mut self, parts: &[&Info]) -> Result<(), AnalysisError> {
        check_tokens(parts)?;
        let scans: BTreeSet<usize> = parts.iter().flat_map(|p| p.scans()).collect();
        let across = scans.len() >= 2;
        let u = if across {
            ColumnUse::Join
        } else {
            ColumnUse::Filter
        };
        for p in parts {
            for s in p.shown() {
                self.add_use(s, u.clone());
                self.compared.insert(s.clone());
            }
        }
        Ok(())
    }

    /// A predicate (WHERE, HAVING, ON, FILTER): comparisons inside are classified by
    /// [`Self::compare`]; columns tested any other way (`WHERE flag`) are filters.
    fn predicate(&mut self, e: &Expr, scope: &Scope<'_>) -> Result<Info, AnalysisError> {
        let saved = std::mem::take(&mut self.compared);
        let info = self.expr(e, scope)?;
        let compared = std::mem::replace(&mut self.compared, saved);
        for s in info.shown() {
            if !compared.contains(s) {
                self.add_use(s, ColumnUse::Filter);
            }
        }
        self.compared.extend(compared);
        Ok(info.into_test())
    }

    fn exprs(&mut self, es: &[Expr], scope: &Scope<'_>) -> Result<Vec<Info>, AnalysisError> {
        es.iter().map(|e| self.expr(e, scope)).collect()
    }

    fn subquery(&mut self, sq: &Subquery, scope: &Scope<'_>) -> Result<Info, AnalysisError> {
        let infos = self.plan(&sq.subquery, Some(scope))?;
        infos
            .into_iter()
            .next()
            .ok_or_else(|| AnalysisError::Internal("subquery without a column".into()))
    }

    #[allow(deprecated)] // `Expr::Wildcard` is matched only to refuse it.
    fn expr(&mut self, e: &Expr, scope: &Scope<'_>) -> Result<Info, AnalysisError> {
        Ok(match e {
            Expr::Alias(a) => self.expr(&a.expr, scope)?,
            Expr::Column(c) => scope.local(c)?,
            Expr::OuterReferenceColumn(_, c) => scope.outer(c)?,
            Expr::Literal(..) | Expr::ScalarVariable(..) | Expr::Placeholder(_) => Info::constant(),
            Expr::BinaryExpr(b) => {
                let l = self.expr(&b.left, scope)?;
                let r = self.expr(&b.right, scope)?;
                if is_test(&b.op) {
                    self.compare(&[&l, &r])?;
                    merge([l.into_test(), r.into_test()], false)?
                } else if matches!(b.op, Operator::And | Operator::Or) {
                    merge([l.into_test(), r.into_test()], false)?
                } else {
                    merge([l, r], true)?
                }
            }
            Expr::Like(l) | Expr::SimilarTo(l) => {
                let v = self.expr(&l.expr, scope)?;
                let p = self.expr(&l.pattern, scope)?;
                self.compare(&[&v, &p])?;
                merge([v.into_test(), p.into_test()], false)?
            }
            Expr::Between(b) => {
                let v = self.expr(&b.expr, scope)?;
                let lo = self.expr(&b.low, scope)?;
                let hi = self.expr(&b.high, scope)?;
                self.compare(&[&v, &lo, &hi])?;
                merge([v.into_test(), lo.into_test(), hi.into_test()], false)?
            }
            Expr::InList(l) => {
                let mut parts = vec![self.expr(&l.expr, scope)?];
                parts.extend(self.exprs(&l.list, scope)?);
                self.compare(&parts.iter().collect::<Vec<_>>())?;
                merge(parts.into_iter().map(Info::into_test), false)?
            }
            Expr::Not(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotTrue(x)
            | Expr::IsNotFalse(x)
            | Expr::IsNotUnknown(x) => {
                let v = self.expr(x, scope)?;
                // A test of a column on its own (`flag IS TRUE`) is a filter on it.
                self.compare(&[&v])?;
                v.into_test()
            }
            Expr::Negative(x) => self.expr(x, scope)?,
            Expr::Cast(c) => self.expr(&c.expr, scope)?,
            Expr::TryCast(c) => self.expr(&c.expr, scope)?,
            Expr::Case(c) => {
                let base = c.expr.as_deref().map(|b| self.expr(b, scope)).transpose()?;
                let mut deciding = Vec::new();
                let mut values = Vec::new();
                for (when, then) in &c.when_then_expr {
                    let w = self.expr(when, scope)?;
                    match &base {
                        Some(b) => self.compare(&[b, &w])?,
                        None => self.compare(&[&w])?,
                    }
                    deciding.push(w.into_test());
                    values.push(self.expr(then, scope)?);
                }
                if let Some(b) = base {
                    deciding.push(b.into_test());
                }
                if let Some(e) = &c.else_expr {
                    values.push(self.expr(e, scope)?);
                }
                let values = merge(values, true)?;
                let deciding = merge(deciding, false)?;
                merge([values, deciding], true)?
            }
            Expr::ScalarFunction(f) => {
                let parts = self.exprs(&f.args, scope)?;
                merge(parts, true)?
            }
            Expr::AggregateFunction(af) => self.aggregate(af, scope)?,
            Expr::WindowFunction(wf) => self.window(wf, scope)?,
            Expr::Exists(x) => {
                self.subquery(&x.subquery, scope)?;
                // Like `count(*) > 0` over the subquery.
                Info {
                    aggregated: true,
                    ..Info::default()
                }
            }
            Expr::InSubquery(InSubquery { expr, subquery, .. })
            | Expr::SetComparison(SetComparison { expr, subquery, .. }) => {
                let v = self.expr(expr, scope)?;
                let s = self.subquery(subquery, scope)?;
                self.compare(&[&v, &s])?;
                let v = v.into_test();
                let mut out = Info {
                    raw: BTreeSet::new(),
                    ctrl: v.ctrl,
                    agg: v.agg,
                    aggregated: v.constant || v.aggregated,
                    constant: false,
                    tokens: BTreeMap::new(),
                };
                out.agg.extend(s.raw.into_iter().chain(s.ctrl).chain(s.agg));
                out
            }
            Expr::ScalarSubquery(sq) => self.subquery(sq, scope)?,
            Expr::GroupingSet(_) => {
                return Err(AnalysisError::Internal(
                    "grouping set outside GROUP BY".into(),
                ));
            }
            Expr::Wildcard { .. } => {
                return Err(AnalysisError::Internal("unexpanded wildcard".into()));
            }
            // Anything else (unnest, lambdas, higher-order functions, ...): every part flows in.
            other => {
                let mut children = Vec::new();
                other
                    .apply_children(|c| {
                        children.push(c.clone());
                        Ok(TreeNodeRecursion::Continue)
                    })
                    .map_err(|e| AnalysisError::Internal(e.to_string()))?;
                let parts = self.exprs(&children, scope)?;
                merge(parts, true)?
            }
        })
    }

    fn aggregate(
        &mut self,
        af: &AggregateFunction,
        scope: &Scope<'_>,
    ) -> Result<Info, AnalysisError> {
        let name = af.func.name().to_owned();
        let p = &af.params;
        let args = self.exprs(&p.args, scope)?;
        if let Some(filter) = &p.filter {
            self.predicate(filter, scope)?;
        }
        for s in &p.order_by {
            let o = self.expr(&s.expr, scope)?;
            for src in o.shown() {
                self.add_use(src, ColumnUse::Order);
            }
        }
        let u = ColumnUse::Aggregate {
            function: name.clone(),
            distinct: p.distinct,
        };
        let mut out = Info {
            aggregated: true,
            ..Info::default()
        };
        for a in args {
            for s in &a.raw {
                self.add_use(s, u.clone());
            }
            if !counts_only(&name) {
                for (d, c) in a.tokens {
                    add_token(&mut out.tokens, d, c)?;
                }
            }
            out.agg.extend(a.raw.into_iter().chain(a.ctrl).chain(a.agg));
        }
        Ok(out)
    }

    fn window(&mut self, wf: &WindowFunction, scope: &Scope<'_>) -> Result<Info, AnalysisError> {
        let name = wf.fun.name().to_owned();
        let p = &wf.params;
        let args = self.exprs(&p.args, scope)?;
        if let Some(filter) = &p.filter {
            self.predicate(filter, scope)?;
        }
        let mut deciding = Vec::new();
        for e in &p.partition_by {
            let i = self.expr(e, scope)?;
            for s in &i.raw {
                self.add_use(s, ColumnUse::Group);
            }
            deciding.push(i.into_test());
        }
        for s in &p.order_by {
            let i = self.expr(&s.expr, scope)?;
            for src in &i.raw {
                self.add_use(src, ColumnUse::Order);
            }
            deciding.push(i.into_test());
        }
        let u = ColumnUse::Window {
            function: name.clone(),
        };
        for a in &args {
            for s in &a.raw {
                self.add_use(s, u.clone());
            }
        }
        let mut values = merge(args, true)?;
        if counts_only(&name) {
            values.tokens.clear();
        }
        let deciding = merge(deciding, false)?;
        merge([values, deciding], true)
    }

    /// The infos of `plan`'s output columns, in schema order.
    fn plan(
        &mut self,
        plan: &LogicalPlan,
        outer: Option<&Scope<'_>>,
    ) -> Result<Vec<Info>, AnalysisError> {
        let infos = match plan {
            LogicalPlan::TableScan(scan) => {
                let table = match (scan.table_name.catalog(), scan.table_name.schema()) {
                    (None | Some("datafusion"), Some(schema)) => {
                        format!("{schema}.{}", scan.table_name.table())
                    }
                    _ => scan.table_name.to_string(),
                };
                self.out.tables.insert(table.clone());
                let id = self.next_scan;
                self.next_scan += 1;
                let schema = scan.source.schema();
                let all: Vec<Info> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let col = ColumnRef::new(table.clone(), f.name().clone());
                        let mut info = Info::default();
                        if let Some(domain) = (self.token_domain)(&col) {
                            info.tokens.insert(domain, col.clone());
                        }
                        info.raw.insert(Src { scan: id, col });
                        info
                    })
                    .collect();
                if !scan.filters.is_empty() {
                    let qualified =
                        DFSchema::try_from_qualified_schema(scan.table_name.clone(), &schema)
                            .map_err(|e| AnalysisError::Internal(e.to_string()))?;
                    let scope = Scope {
                        frames: vec![(&qualified, &all)],
                        outer,
                    };
                    for f in &scan.filters {
                        self.predicate(f, &scope)?;
                    }
                }
                match &scan.projection {
                    None => all,
                    Some(p) => p
                        .iter()
                        .map(|i| {
                            all.get(*i)
                                .cloned()
                                .ok_or_else(|| AnalysisError::Internal("projection".into()))
                        })
                        .collect::<Result<_, _>>()?,
                }
            }
            LogicalPlan::Projection(p) => {
                let input = self.plan(&p.input, outer)?;
                let scope = Scope {
                    frames: vec![(p.input.schema(), &input)],
                    outer,
                };
                self.exprs(&p.expr, &scope)?
            }
            LogicalPlan::Filter(f) => {
                let input = self.plan(&f.input, outer)?;
                let scope = Scope {
                    frames: vec![(f.input.schema(), &input)],
                    outer,
                };
                self.predicate(&f.predicate, &scope)?;
                input
            }
            LogicalPlan::Window(w) => {
                let mut input = self.plan(&w.input, outer)?;
                let scope = Scope {
                    frames: vec![(w.input.schema(), &input)],
                    outer,
                };
                let extra = self.exprs(&w.window_expr, &scope)?;
                input.extend(extra);
                input
            }
            LogicalPlan::Aggregate(a) => self.aggregate_node(a, outer)?,
            LogicalPlan::Sort(s) => {
                let input = self.plan(&s.input, outer)?;
                let scope = Scope {
                    frames: vec![(s.input.schema(), &input)],
                    outer,
                };
                for e in &s.expr {
                    let i = self.expr(&e.expr, &scope)?;
                    for src in &i.raw {
                        self.add_use(src, ColumnUse::Order);
                    }
                }
                input
            }
            LogicalPlan::Join(j) => {
                let left = self.plan(&j.left, outer)?;
                let right = self.plan(&j.right, outer)?;
                {
                    let ls = Scope {
                        frames: vec![(j.left.schema(), &left)],
                        outer,
                    };
                    let rs = Scope {
                        frames: vec![(j.right.schema(), &right)],
                        outer,
                    };
                    for (l, r) in &j.on {
                        let li = self.expr(l, &ls)?;
                        let ri = self.expr(r, &rs)?;
                        check_tokens(&[&li, &ri])?;
                        for s in li.shown().chain(ri.shown()) {
                            self.add_use(s, ColumnUse::Join);
                        }
                    }
                    if let Some(filter) = &j.filter {
                        let both = Scope {
                            frames: vec![(j.left.schema(), &left), (j.right.schema(), &right)],
                            outer,
                        };
                        self.predicate(filter, &both)?;
                    }
                }
                let mark = || Info {
                    aggregated: true,
                    ..Info::default()
                };
                match j.join_type {
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                        left.into_iter().chain(right).collect()
                    }
                    JoinType::LeftSemi | JoinType::LeftAnti => left,
                    JoinType::RightSemi | JoinType::RightAnti => right,
                    JoinType::LeftMark => left.into_iter().chain([mark()]).collect(),
                    JoinType::RightMark => right.into_iter().chain([mark()]).collect(),
                }
            }
            LogicalPlan::Union(u) => {
                let mut merged: Option<Vec<Info>> = None;
                for input in &u.inputs {
                    let infos = self.plan(input, outer)?;
                    merged = Some(match merged {
                        None => infos,
                        Some(prev) => {
                            if prev.len() != infos.len() {
                                return Err(AnalysisError::Internal("union width".into()));
                            }
                            prev.into_iter()
                                .zip(infos)
                                .map(|(a, b)| merge([a, b], true))
                                .collect::<Result<_, _>>()?
                        }
                    });
                }
                // No input would leave the outputs without lineage: refused, not empty.
                merged.ok_or_else(|| AnalysisError::Internal("union without inputs".into()))?
            }
            LogicalPlan::Distinct(Distinct::All(input)) => {
                let infos = self.plan(input, outer)?;
                for i in &infos {
                    for s in &i.raw {
                        self.add_use(s, ColumnUse::Group);
                    }
                }
                infos
            }
            LogicalPlan::Distinct(Distinct::On(d)) => {
                let input = self.plan(&d.input, outer)?;
                let scope = Scope {
                    frames: vec![(d.input.schema(), &input)],
                    outer,
                };
                for e in &d.on_expr {
                    let i = self.expr(e, &scope)?;
                    for s in &i.raw {
                        self.add_use(s, ColumnUse::Group);
                    }
                }
                if let Some(sorts) = &d.sort_expr {
                    for e in sorts {
                        let i = self.expr(&e.expr, &scope)?;
                        for s in &i.raw {
                            self.add_use(s, ColumnUse::Order);
                        }
                    }
                }
                self.exprs(&d.select_expr, &scope)?
            }
            LogicalPlan::SubqueryAlias(a) => self.plan(&a.input, outer)?,
            LogicalPlan::Subquery(s) => self.plan(&s.subquery, outer)?,
            LogicalPlan::Limit(l) => self.plan(&l.input, outer)?,
            LogicalPlan::Repartition(r) => self.plan(&r.input, outer)?,
            LogicalPlan::EmptyRelation(e) => {
                e.schema.fields().iter().map(|_| Info::constant()).collect()
            }
            LogicalPlan::Values(v) => {
                let width = v.schema.fields().len();
                let scope = Scope {
                    frames: Vec::new(),
                    outer,
                };
                let mut cols: Vec<Vec<Info>> = vec![Vec::new(); width];
                for row in &v.values {
                    for (i, e) in row.iter().enumerate() {
                        let info = self.expr(e, &scope)?;
                        cols.get_mut(i)
                            .ok_or_else(|| AnalysisError::Internal("values width".into()))?
                            .push(info);
                    }
                }
                cols.into_iter()
                    .map(|c| merge(c, true))
                    .collect::<Result<_, _>>()?
            }
            LogicalPlan::Unnest(u) => {
                let input = self.plan(&u.input, outer)?;
                let in_schema = u.input.schema();
                let mut unnested = Vec::new();
                for c in &u.exec_columns {
                    let i = in_schema
                        .maybe_index_of_column(c)
                        .and_then(|i| input.get(i))
                        .cloned();
                    unnested
                        .push(i.ok_or_else(|| AnalysisError::Internal("unnest column".into()))?);
                }
                let all_unnested = merge(unnested, true)?;
                u.schema
                    .iter()
                    .map(|(q, f)| {
                        let col = Column::new(q.cloned(), f.name());
                        match in_schema
                            .maybe_index_of_column(&col)
                            .and_then(|i| input.get(i))
                        {
                            Some(i) if !u.exec_columns.contains(&col) => i.clone(),
                            _ => all_unnested.clone(),
                        }
                    })
                    .collect()
            }
            LogicalPlan::RecursiveQuery(_) => {
                return Err(AnalysisError::Unsupported("a recursive query".into()));
            }
            LogicalPlan::Statement(_) => {
                return Err(AnalysisError::NotAQuery("a statement".into()));
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => {
                return Err(AnalysisError::NotAQuery("EXPLAIN".into()));
            }
            LogicalPlan::Dml(_) => return Err(AnalysisError::NotAQuery("a data change".into())),
            LogicalPlan::Ddl(_) => return Err(AnalysisError::NotAQuery("a definition".into())),
            LogicalPlan::Copy(_) => return Err(AnalysisError::NotAQuery("COPY".into())),
            LogicalPlan::DescribeTable(_) => {
                return Err(AnalysisError::NotAQuery("DESCRIBE".into()));
            }
            LogicalPlan::Extension(_) => {
                return Err(AnalysisError::Unsupported("an extension plan node".into()));
            }
        };
        if infos.len() != plan.schema().fields().len() {
            return Err(AnalysisError::Internal("width of a plan node".into()));
        }
        Ok(infos)
    }

    fn aggregate_node(
        &mut self,
        a: &Aggregate,
        outer: Option<&Scope<'_>>,
    ) -> Result<Vec<Info>, AnalysisError> {
        let input = self.plan(&a.input, outer)?;
        let scope = Scope {
            frames: vec![(a.input.schema(), &input)],
            outer,
        };
        let groups = grouping_set_to_exprlist(&a.group_expr)
            .map_err(|e| AnalysisError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        for g in groups {
            let i = self.expr(g, &scope)?;
            for s in &i.raw {
                self.add_use(s, ColumnUse::Group);
            }
            out.push(i);
        }
        if matches!(a.group_expr.as_slice(), [Expr::GroupingSet(_)]) {
            // The internal grouping id: which keys a row groups by.
            out.push(Info::constant());
        }
        out.extend(self.exprs(&a.aggr_expr, &scope)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
