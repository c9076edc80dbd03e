//! The analysts' restricted aggregate language, parsed from SQL text.
//!
//! An analysis is one aggregate over equality joins of token columns:
//!
//! ```text
//! [WITH name AS (block), ...]
//! SELECT key | aggregate, ...            key: column | date_trunc('unit', column)
//! FROM source [JOIN source ON a.tok = b.tok [AND ...]]...
//! [WHERE condition]                      column <op> constant, IN, BETWEEN, IS [NOT] NULL,
//!                                        combined with AND, OR, NOT
//! [GROUP BY key, ...]                    every key shown, every shown key grouped
//! [HAVING condition on shown aggregates] tested on the released (noisy) values
//! [ORDER BY shown column [ASC|DESC], ...] [LIMIT n]
//!
//! aggregate: count(*) | count(column) | count(DISTINCT column) | sum(column) | avg(column)
//! source:    partner.dataset [AS a] | (block) AS a | cte_name [AS a]
//! block:     SELECT column [AS name], ... FROM source [JOIN ...] [WHERE condition]
//! ```
//!
//! Every block is flattened into one list of base-table instances, their join equalities
//! and one filter, whatever the nesting: the gate then knows every row's privacy unit no
//! matter which columns a block projects away. Everything else — subqueries in
//! expressions, set operations, windows, conditional expressions, arithmetic, functions on
//! tokens, grouping sets, DISTINCT, outer and cross joins — is refused naming the rule.
//! Limits on the text's length, nesting and size are checked before and while parsing, so
//! no text can exhaust the stack.

use std::collections::BTreeMap;
use std::fmt;

use blindwatch_common::IdentifierKind;
use blindwatch_contract::{ColumnType, Contract, ContractSet, Role};
use chrono::{NaiveDate, NaiveDateTime};
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, DateTimeField, Distinct, DuplicateTreatment, Expr, FunctionArg,
    FunctionArgExpr, FunctionArguments, GroupByExpr, JoinConstraint, JoinOperator, LimitClause,
    ObjectName, ObjectNamePart, OrderByKind, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement, TableFactor, TableWithJoins, UnaryOperator, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Limits every analysis text is held to, checked before anything is planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of SQL text.
    pub max_sql_bytes: usize,
    /// Nesting of expressions and blocks (also the parser's recursion limit).
    pub max_depth: usize,
    /// Expression nodes in the whole text.
    pub max_nodes: usize,
    /// Values in one IN list.
    pub max_in_list: usize,
    /// Base tables an analysis may read (instances, after flattening).
    pub max_tables: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sql_bytes: 16 * 1024,
            max_depth: 32,
            max_nodes: 1000,
            max_in_list: 500,
            max_tables: 6,
        }
    }
}

/// Why a text is not an analysis: the rule and a message that names what to change. The
/// message quotes only names the analyst wrote (tables, columns, functions), never data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: LanguageRule,
    pub message: String,
}

/// The language's rules, one code each for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LanguageRule {
    /// Too long, too deep, too many terms.
    Limits,
    /// Not one SELECT, or not SQL this gate reads.
    Syntax,
    /// A table, column or name that does not exist here, or a raw identifier.
    Names,
    /// Not the shape of one aggregate: rows, sets, windows, subqueries in expressions.
    Shape,
    /// A join that is not an equality of token columns of the same kind.
    Join,
    /// An aggregate the gate does not release (min, max, CASE inside, FILTER, ...).
    Aggregate,
    /// A condition that is not a column compared with constants.
    Condition,
    /// A function applied to a token, or any other expression on a token.
    Token,
}

impl LanguageRule {
    pub fn code(self) -> &'static str {
        match self {
            LanguageRule::Limits => "limits",
            LanguageRule::Syntax => "syntax",
            LanguageRule::Names => "names",
            LanguageRule::Shape => "aggregate-only",
            LanguageRule::Join => "join",
            LanguageRule::Aggregate => "aggregate-functions",
            LanguageRule::Condition => "condition",
            LanguageRule::Token => "token-use",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused (rule {}): {}", self.rule.code(), self.message)
    }
}

fn refuse<T>(rule: LanguageRule, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        rule,
        message: message.into(),
    })
}

/// A base table as read by the analysis (a table may be read several times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `<partner>.<dataset>`.
    pub table: String,
}

/// A column of one instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ColumnAt {
    pub instance: usize,
    /// The sealed column name.
    pub column: String,
}

/// What a sealed column holds, as far as the language cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Token(IdentifierKind),
    Attribute(ColumnType),
}

/// Units `date_trunc` may cut a date or time to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncUnit {
    Year,
    Quarter,
    Month,
    Week,
    Day,
    Hour,
    Minute,
}

impl TruncUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            TruncUnit::Year => "year",
            TruncUnit::Quarter => "quarter",
            TruncUnit::Month => "month",
            TruncUnit::Week => "week",
            TruncUnit::Day => "day",
            TruncUnit::Hour => "hour",
            TruncUnit::Minute => "minute",
        }
    }

    fn parse(s: &str) -> Option<TruncUnit> {
        Some(match s.to_ascii_lowercase().as_str() {
            "year" => TruncUnit::Year,
            "quarter" => TruncUnit::Quarter,
            "month" => TruncUnit::Month,
            "week" => TruncUnit::Week,
            "day" => TruncUnit::Day,
            "hour" => TruncUnit::Hour,
            "minute" => TruncUnit::Minute,
            _ => return None,
        })
    }
}

/// A group key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Column(ColumnAt),
    Trunc(TruncUnit, ColumnAt),
}

impl Key {
    pub fn column(&self) -> &ColumnAt {
        match self {
            Key::Column(c) | Key::Trunc(_, c) => c,
        }
    }
}

/// A released aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregate {
    CountRows,
    Count(ColumnAt),
    CountDistinct(ColumnAt),
    Sum(ColumnAt),
    Avg(ColumnAt),
}

impl Aggregate {
    pub fn column(&self) -> Option<&ColumnAt> {
        match self {
            Aggregate::CountRows => None,
            Aggregate::Count(c)
            | Aggregate::CountDistinct(c)
            | Aggregate::Sum(c)
            | Aggregate::Avg(c) => Some(c),
        }
    }
}

/// A constant a condition compares with, checked against the column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    /// The run's day, minus a number of days.
    CurrentDate {
        minus_days: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Comparison {
    pub fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::NotEq => "<>",
            Comparison::Lt => "<",
            Comparison::LtEq => "<=",
            Comparison::Gt => ">",
            Comparison::GtEq => ">=",
        }
    }

    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Comparison::Eq => left == right,
            Comparison::NotEq => left != right,
            Comparison::Lt => left < right,
            Comparison::LtEq => left <= right,
            Comparison::Gt => left > right,
            Comparison::GtEq => left >= right,
        }
    }

    fn from_operator(op: &BinaryOperator) -> Option<Comparison> {
        Some(match op {
            BinaryOperator::Eq => Comparison::Eq,
            BinaryOperator::NotEq => Comparison::NotEq,
            BinaryOperator::Lt => Comparison::Lt,
            BinaryOperator::LtEq => Comparison::LtEq,
            BinaryOperator::Gt => Comparison::Gt,
            BinaryOperator::GtEq => Comparison::GtEq,
            _ => return None,
        })
    }
}

/// A filter over the rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
    Compare(ColumnAt, Comparison, Constant),
    In {
        column: ColumnAt,
        values: Vec<Constant>,
        negated: bool,
    },
    Between {
        column: ColumnAt,
        low: Constant,
        high: Constant,
        negated: bool,
    },
    IsNull {
        column: ColumnAt,
        negated: bool,
    },
}

impl Condition {
    /// Every column the condition reads.
    pub fn columns(&self, out: &mut Vec<ColumnAt>) {
        match self {
            Condition::And(v) | Condition::Or(v) => v.iter().for_each(|c| c.columns(out)),
            Condition::Not(c) => c.columns(out),
            Condition::Compare(c, ..)
            | Condition::In { column: c, .. }
            | Condition::Between { column: c, .. }
            | Condition::IsNull { column: c, .. } => out.push(c.clone()),
        }
    }
}

/// A test on released aggregates (by their index among the outputs' aggregates).
#[derive(Debug, Clone, PartialEq)]
pub enum Having {
    And(Vec<Having>),
    Or(Vec<Having>),
    Not(Box<Having>),
    Compare(usize, Comparison, f64),
}

/// One result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Key(usize),
    Aggregate(usize),
}

/// An analysis in normal form: what the gate plans, checks and runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub instances: Vec<Instance>,
    /// Token equalities between instances.
    pub joins: Vec<(ColumnAt, ColumnAt)>,
    pub filter: Option<Condition>,
    pub keys: Vec<Key>,
    pub aggregates: Vec<Aggregate>,
    /// Result columns in the analyst's order, with their names.
    pub outputs: Vec<(String, Output)>,
    pub having: Option<Having>,
    /// (result column, descending).
    pub order: Vec<(usize, bool)>,
    pub limit: Option<u64>,
}

/// The stack the parser and the checks run on. Chains like `1 + 1 + ... + 1` parse into
/// trees as deep as they are long, whatever the recursion limit; with the length limit they
/// stay far within this.
const PARSER_STACK: usize = 64 << 20;

/// Parses `sql` into an analysis over the tables `contracts` describe, on a thread with a
/// known stack, so no text can overflow the caller's.
pub fn parse(sql: &str, contracts: &ContractSet, limits: &Limits) -> Result<Analysis, Refusal> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("bw-query-parse".into())
            .stack_size(PARSER_STACK)
            .spawn_scoped(scope, || parse_here(sql, contracts, limits))
            .map_err(|_| Refusal {
                rule: LanguageRule::Limits,
                message: "the query could not be checked now (no thread for the parser); try again"
                    .into(),
            })?
            .join()
            .unwrap_or_else(|_| {
                refuse(
                    LanguageRule::Syntax,
                    "the query could not be checked; simplify it",
                )
            })
    })
}

fn parse_here(sql: &str, contracts: &ContractSet, limits: &Limits) -> Result<Analysis, Refusal> {
    if sql.len() > limits.max_sql_bytes {
        return refuse(
            LanguageRule::Limits,
            format!(
                "the query is {} bytes long; the limit is {} bytes",
                sql.len(),
                limits.max_sql_bytes
            ),
        );
    }
    let dialect = GenericDialect {};
    let statements = Parser::new(&dialect)
        .with_recursion_limit(limits.max_depth)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(|e| Refusal {
            rule: if e.to_string().contains("recursion limit") {
                LanguageRule::Limits
            } else {
                LanguageRule::Syntax
            },
            // The parser's message quotes the offending token, which is the analyst's own
            // text: keep only its position-free summary.
            message: parser_message(&e.to_string()),
        })?;
    let [statement] = statements.as_slice() else {
        return refuse(
            LanguageRule::Syntax,
            format!("one SELECT statement is expected, not {}", statements.len()),
        );
    };
    let Statement::Query(query) = statement else {
        return refuse(
            LanguageRule::Syntax,
            "only a SELECT is answered: no DDL, DML, COPY, EXPLAIN, SET or functions of your own",
        );
    };
    let mut terms = 0usize;
    let counted = ast::visit_expressions(statement, |_| {
        terms += 1;
        if terms > limits.max_nodes {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    if counted.is_break() {
        return refuse(
            LanguageRule::Limits,
            format!(
                "the query has more than {} terms; split it into simpler questions",
                limits.max_nodes
            ),
        );
    }
    let mut parser = Reader {
        contracts,
        limits,
        nodes: 0,
        instances: Vec::new(),
        joins: Vec::new(),
        conditions: Vec::new(),
    };
    parser.top(query)
}

fn parser_message(text: &str) -> String {
    let text = text.trim_start_matches("sql parser error: ");
    // What follows is the analyst's own text and its position: never echoed.
    let cut = [" at Line", ", found", " found"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    let mut out: String = text[..cut].chars().take(200).collect();
    if out.is_empty() {
        out = "the text is not SQL this gate reads".into();
    }
    format!("the text does not parse: {out}")
}

/// A relation visible in a FROM clause: its name and its columns.
#[derive(Debug, Clone)]
struct Relation {
    name: String,
    /// Also reachable as `<partner>.<dataset>` (base tables).
    full_name: Option<String>,
    columns: BTreeMap<String, Bound>,
}

#[derive(Debug, Clone)]
enum Bound {
    Column(ColumnAt, ColumnKind),
    /// A raw identifier kept only for justified reveals: never readable here.
    RawIdentifier,
}

struct Reader<'a> {
    contracts: &'a ContractSet,
    limits: &'a Limits,
    nodes: usize,
    instances: Vec<Instance>,
    joins: Vec<(ColumnAt, ColumnAt)>,
    conditions: Vec<Condition>,
}

type Ctes<'q> = BTreeMap<String, &'q Query>;

impl<'a> Reader<'a> {
    fn count(&mut self, depth: usize) -> Result<(), Refusal> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return refuse(
                LanguageRule::Limits,
                format!(
                    "the query has more than {} terms; split it into simpler questions",
                    self.limits.max_nodes
                ),
            );
        }
        if depth > self.limits.max_depth {
            return refuse(
                LanguageRule::Limits,
                format!(
                    "expressions are nested more than {} deep",
                    self.limits.max_depth
                ),
            );
        }
        Ok(())
    }

    fn top(&mut self, query: &Query) -> Result<Analysis, Refusal> {
        let ctes = self.ctes(query, &BTreeMap::new())?;
        let select = plain_select(query)?;
        let relations = self.from(&select.from, &ctes, 1)?;
        let Select {
            projection,
            selection,
            group_by,
            having,
            ..
        } = select;
        if let Some(w) = selection {
            let c = self.condition(w, &relations, 1)?;
            self.conditions.push(c);
        }
        // Keys and aggregates of the select list.
        let mut keys: Vec<Key> = Vec::new();
        let mut aggregates: Vec<Aggregate> = Vec::new();
        let mut outputs: Vec<(String, Output)> = Vec::new();
        for item in projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident(alias))),
                SelectItem::ExprWithAliases { .. }
                | SelectItem::QualifiedWildcard(..)
                | SelectItem::Wildcard(_) => {
                    return refuse(
                        LanguageRule::Shape,
                        "`*` would list rows: name the group keys and aggregates to show",
                    );
                }
            };
            if let Some(a) = &alias
                && a.starts_with("__")
            {
                return refuse(
                    LanguageRule::Names,
                    "names starting with `__` are the gate's own",
                );
            }
            match self.aggregate(expr, &relations, 1)? {
                Some(agg) => {
                    let name = alias.unwrap_or_else(|| self.aggregate_name(&agg));
                    aggregates.push(agg);
                    outputs.push((name, Output::Aggregate(aggregates.len() - 1)));
                }
                None => {
                    let key = self.key(expr, &relations, 1)?;
                    let name = alias.unwrap_or_else(|| key_name(&key));
                    if keys.contains(&key) {
                        return refuse(
                            LanguageRule::Shape,
                            format!("the group key `{name}` is shown twice"),
                        );
                    }
                    keys.push(key);
                    outputs.push((name, Output::Key(keys.len() - 1)));
                }
            }
        }
        if aggregates.is_empty() {
            return refuse(
                LanguageRule::Shape,
                "the result must hold at least one aggregate (count, sum, avg): rows and distinct values are never released",
            );
        }
        // GROUP BY: exactly the shown keys.
        let grouped: Vec<Key> = match group_by {
            GroupByExpr::All(_) => {
                return refuse(LanguageRule::Shape, "GROUP BY ALL: name the group keys");
            }
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return refuse(
                        LanguageRule::Shape,
                        "GROUP BY modifiers (ROLLUP, CUBE, GROUPING SETS, TOTALS) would release subtotals that undo suppression",
                    );
                }
                let mut out = Vec::new();
                for e in exprs {
                    out.push(self.group_key(e, &relations, &outputs, &keys)?);
                }
                out
            }
        };
        for k in &grouped {
            if !keys.contains(k) {
                return refuse(
                    LanguageRule::Shape,
                    format!(
                        "GROUP BY `{}` is not shown: show every group key",
                        key_name(k)
                    ),
                );
            }
        }
        for k in &keys {
            if !grouped.contains(k) {
                return refuse(
                    LanguageRule::Shape,
                    format!(
                        "`{}` is neither grouped nor aggregated: add it to GROUP BY or aggregate it",
                        key_name(k)
                    ),
                );
            }
        }
        let having = match having {
            Some(h) => Some(self.having(h, &relations, &aggregates, &outputs, 1)?),
            None => None,
        };
        let order = self.order(query, &relations, &outputs, &keys, &aggregates)?;
        let limit = limit(query)?;
        if self.instances.len() > self.limits.max_tables {
            return refuse(
                LanguageRule::Limits,
                format!(
                    "the query reads {} tables; the limit is {}",
                    self.instances.len(),
                    self.limits.max_tables
                ),
            );
        }
        let filter = match self.conditions.len() {
            0 => None,
            1 => self.conditions.pop(),
            _ => Some(Condition::And(std::mem::take(&mut self.conditions))),
        };
        Ok(Analysis {
            instances: std::mem::take(&mut self.instances),
            joins: std::mem::take(&mut self.joins),
            filter,
            keys,
            aggregates,
            outputs,
            having,
            order,
            limit,
        })
    }

    /// The CTEs a query defines (each must be a block), added to those in scope.
    fn ctes<'q>(&mut self, query: &'q Query, outer: &Ctes<'q>) -> Result<Ctes<'q>, Refusal> {
        let mut ctes = outer.clone();
        if let Some(with) = &query.with {
            if with.recursive {
                return refuse(LanguageRule::Shape, "WITH RECURSIVE is not answered");
            }
            for cte in &with.cte_tables {
                if !cte.alias.columns.is_empty() || cte.from.is_some() {
                    return refuse(
                        LanguageRule::Syntax,
                        "name a CTE's columns inside its SELECT, not after its name",
                    );
                }
                ctes.insert(ident(&cte.alias.name), cte.query.as_ref());
            }
        }
        Ok(ctes)
    }

    /// Reads a FROM clause: exactly one source and its inner joins on token equalities.
    fn from(
        &mut self,
        from: &[TableWithJoins],
        ctes: &Ctes<'_>,
        depth: usize,
    ) -> Result<Vec<Relation>, Refusal> {
        let [first] = from else {
            return refuse(
                LanguageRule::Join,
                if from.is_empty() {
                    "the query reads no table"
                } else {
                    "tables listed with commas are a cross join: join them with JOIN ... ON a.token = b.token"
                },
            );
        };
        let mut relations = vec![self.source(&first.relation, ctes, depth)?];
        for join in &first.joins {
            let constraint = match &join.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) => c,
                _ => {
                    return refuse(
                        LanguageRule::Join,
                        "only inner joins (JOIN ... ON a.token = b.token) are answered: outer, cross, semi, anti and lateral joins are not",
                    );
                }
            };
            if join.global {
                return refuse(LanguageRule::Join, "GLOBAL joins are not answered");
            }
            let first_new = self.instances.len();
            let right = self.source(&join.relation, ctes, depth)?;
            let new = first_new..self.instances.len();
            let JoinConstraint::On(on) = constraint else {
                return refuse(
                    LanguageRule::Join,
                    "a join needs ON a.token = b.token (USING, NATURAL and joins without a condition are not answered)",
                );
            };
            relations.push(right);
            let joins_before = self.joins.len();
            self.join_condition(on, &relations, depth)?;
            let links = self.joins[joins_before..]
                .iter()
                .any(|(l, r)| new.contains(&l.instance) != new.contains(&r.instance));
            if !links {
                return refuse(
                    LanguageRule::Join,
                    "each JOIN's ON must equate a token of the table it joins with a token of the tables before it",
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &relations {
            if !names.insert(r.name.clone()) {
                return refuse(
                    LanguageRule::Names,
                    format!("`{}` is used twice in one FROM: give each an alias", r.name),
                );
            }
        }
        Ok(relations)
    }

    fn join_condition(
        &mut self,
        on: &Expr,
        relations: &[Relation],
        depth: usize,
    ) -> Result<(), Refusal> {
        self.count(depth)?;
        match on {
            Expr::Nested(e) => self.join_condition(e, relations, depth + 1),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                self.join_condition(left, relations, depth + 1)?;
                self.join_condition(right, relations, depth + 1)
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let (l, lk) = self.column(left, relations, depth + 1)?;
                let (r, rk) = self.column(right, relations, depth + 1)?;
                match (lk, rk) {
                    (ColumnKind::Token(a), ColumnKind::Token(b)) if a == b => {
                        if l.instance == r.instance {
                            return refuse(
                                LanguageRule::Join,
                                "a join compares columns of two different tables",
                            );
                        }
                        self.joins.push((l, r));
                        Ok(())
                    }
                    (ColumnKind::Token(_), ColumnKind::Token(_)) => refuse(
                        LanguageRule::Join,
                        format!(
                            "`{}` and `{}` are tokens of different identifier kinds: they never match",
                            l.column, r.column
                        ),
                    ),
                    _ => refuse(
                        LanguageRule::Join,
                        format!(
                            "joins are equalities of identifier tokens; `{}` = `{}` compares attributes",
                            l.column, r.column
                        ),
                    ),
                }
            }
            _ => refuse(
                LanguageRule::Join,
                "a join condition is one or more token equalities joined with AND (a.token = b.token AND ...)",
            ),
        }
    }

    /// One source of a FROM clause, as a relation; base tables become instances.
    fn source(
        &mut self,
        factor: &TableFactor,
        ctes: &Ctes<'_>,
        depth: usize,
    ) -> Result<Relation, Refusal> {
        if depth > self.limits.max_depth {
            return refuse(LanguageRule::Limits, "blocks are nested too deep");
        }
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                with_ordinality,
                partitions,
                json_path,
                sample,
                index_hints,
            } => {
                if args.is_some()
                    || !with_hints.is_empty()
                    || version.is_some()
                    || *with_ordinality
                    || !partitions.is_empty()
                    || json_path.is_some()
                    || sample.is_some()
                    || !index_hints.is_empty()
                {
                    return refuse(
                        LanguageRule::Syntax,
                        "table functions, hints, versions, partitions and samples are not answered",
                    );
                }
                let parts = object_name(name)?;
                let alias_name = match alias {
                    Some(a) => {
                        if !a.columns.is_empty() {
                            return refuse(
                                LanguageRule::Syntax,
                                "renaming a table's columns in its alias is not answered",
                            );
                        }
                        Some(ident(&a.name))
                    }
                    None => None,
                };
                if let [single] = parts.as_slice()
                    && let Some(cte) = ctes.get(single)
                {
                    let cte = *cte;
                    let mut inner = ctes.clone();
                    inner.remove(single);
                    let mut rel = self.block(cte, &inner, depth + 1)?;
                    rel.name = alias_name.unwrap_or_else(|| single.clone());
                    return Ok(rel);
                }
                let table = match parts.as_slice() {
                    [schema, table] => format!("{schema}.{table}"),
                    [catalog, schema, table] if catalog == "datafusion" => {
                        format!("{schema}.{table}")
                    }
                    _ => {
                        return refuse(
                            LanguageRule::Names,
                            format!(
                                "`{}` is not a table: tables are named <partner>.<dataset>",
                                parts.join(".")
                            ),
                        );
                    }
                };
                let contract = self.contracts.get(&table).map_err(|_| Refusal {
                    rule: LanguageRule::Names,
                    message: format!("there is no table `{table}`"),
                })?;
                let instance = self.instances.len();
                self.instances.push(Instance {
                    table: table.clone(),
                });
                let dataset = table.split('.').nth(1).unwrap_or(&table).to_owned();
                Ok(Relation {
                    name: alias_name.unwrap_or(dataset),
                    full_name: Some(table),
                    columns: table_columns(contract, instance),
                })
            }
            TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample,
            } => {
                if *lateral || sample.is_some() {
                    return refuse(
                        LanguageRule::Syntax,
                        "LATERAL and TABLESAMPLE are not answered",
                    );
                }
                let Some(alias) = alias else {
                    return refuse(LanguageRule::Syntax, "a subquery in FROM needs an alias");
                };
                if !alias.columns.is_empty() {
                    return refuse(
                        LanguageRule::Syntax,
                        "name a subquery's columns inside its SELECT",
                    );
                }
                let mut rel = self.block(subquery, ctes, depth + 1)?;
                rel.name = ident(&alias.name);
                Ok(rel)
            }
            _ => refuse(
                LanguageRule::Syntax,
                "FROM reads tables, CTEs and subqueries only: no table functions, UNNEST or pivots",
            ),
        }
    }

    /// A block (subquery or CTE): columns, joins and a filter, no aggregate. Its instances,
    /// joins and filter join the analysis; it exposes its columns under their names.
    fn block(&mut self, query: &Query, ctes: &Ctes<'_>, depth: usize) -> Result<Relation, Refusal> {
        let ctes = self.ctes(query, ctes)?;
        let select = plain_select(query)?;
        if query.order_by.is_some() || query.limit_clause.is_some() {
            return refuse(
                LanguageRule::Shape,
                "ORDER BY and LIMIT inside a subquery would pick rows: put them on the outer query",
            );
        }
        let relations = self.from(&select.from, &ctes, depth)?;
        match &select.group_by {
            GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty() => {}
            _ => {
                return refuse(
                    LanguageRule::Shape,
                    "a subquery or CTE may select, join and filter rows but not group them: one aggregate per query, on the outside",
                );
            }
        }
        if select.having.is_some() {
            return refuse(LanguageRule::Shape, "HAVING belongs to the outer aggregate");
        }
        if let Some(w) = &select.selection {
            let c = self.condition(w, &relations, depth)?;
            self.conditions.push(c);
        }
        let mut columns = BTreeMap::new();
        for item in &select.projection {
            let (expr, alias) = match item {
                SelectItem::UnnamedExpr(e) => (e, None),
                SelectItem::ExprWithAlias { expr, alias } => (expr, Some(ident(alias))),
                _ => {
                    return refuse(
                        LanguageRule::Shape,
                        "a subquery or CTE names its columns (no `*`)",
                    );
                }
            };
            let name = match (alias, expr) {
                (Some(a), _) => a,
                (None, Expr::Identifier(i)) => ident(i),
                (None, Expr::CompoundIdentifier(parts)) => {
                    parts.last().map(ident).unwrap_or_default()
                }
                (None, _) => {
                    return refuse(
                        LanguageRule::Shape,
                        "a subquery or CTE selects columns only, each perhaps renamed: computed values and aggregates belong to the outer query",
                    );
                }
            };
            let bound = match self.resolve(expr, &relations, depth) {
                Ok(b) => b,
                Err(e) if e.rule == LanguageRule::Shape => {
                    return refuse(
                        LanguageRule::Shape,
                        "a subquery or CTE selects columns only, each perhaps renamed: computed values and aggregates belong to the outer query",
                    );
                }
                Err(e) => return Err(e),
            };
            if columns.insert(name.clone(), bound).is_some() {
                return refuse(
                    LanguageRule::Names,
                    format!("column `{name}` is selected twice in a subquery"),
                );
            }
        }
        Ok(Relation {
            name: String::new(),
            full_name: None,
            columns,
        })
    }

    /// A column reference, resolved to an instance column that queries may read.
    fn column(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        depth: usize,
    ) -> Result<(ColumnAt, ColumnKind), Refusal> {
        match self.resolve(expr, relations, depth)? {
            Bound::Column(c, k) => Ok((c, k)),
            Bound::RawIdentifier => refuse(
                LanguageRule::Names,
                format!(
                    "`{}` is a raw identifier kept only for justified reveals: queries never read it (join or count its token instead)",
                    column_text(expr)
                ),
            ),
        }
    }

    /// A column reference, resolved to what it names.
    fn resolve(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        depth: usize,
    ) -> Result<Bound, Refusal> {
        self.count(depth)?;
        let (qualifier, name): (Option<String>, String) = match expr {
            Expr::Identifier(i) => (None, ident(i)),
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] => (Some(ident(q)), ident(c)),
                [s, t, c] => (Some(format!("{}.{}", ident(s), ident(t))), ident(c)),
                _ => {
                    return refuse(
                        LanguageRule::Names,
                        "a column is named `column`, `alias.column` or `partner.dataset.column`",
                    );
                }
            },
            Expr::Nested(e) => return self.resolve(e, relations, depth + 1),
            _ => {
                return refuse(
                    LanguageRule::Shape,
                    "a column is expected here, not an expression",
                );
            }
        };
        let candidates: Vec<&Relation> = relations
            .iter()
            .filter(|r| match &qualifier {
                None => r.columns.contains_key(&name),
                Some(q) => &r.name == q || r.full_name.as_ref() == Some(q),
            })
            .collect();
        let relation = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return refuse(
                    LanguageRule::Names,
                    match &qualifier {
                        Some(q) => format!("there is no table or alias `{q}` in this FROM"),
                        None => format!("there is no column `{name}` in the tables of this FROM"),
                    },
                );
            }
            _ => {
                return refuse(
                    LanguageRule::Names,
                    format!("column `{name}` is ambiguous: qualify it with its table's alias"),
                );
            }
        };
        match relation.columns.get(&name) {
            Some(b) => Ok(b.clone()),
            None => refuse(
                LanguageRule::Names,
                format!("`{}` has no column `{name}`", relation.name),
            ),
        }
    }

    /// An attribute column (not a token), for keys, conditions and aggregates of values.
    fn attribute(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        depth: usize,
        what: &str,
    ) -> Result<(ColumnAt, ColumnType), Refusal> {
        let (c, kind) = self.column(expr, relations, depth)?;
        match kind {
            ColumnKind::Attribute(t) => Ok((c, t)),
            ColumnKind::Token(_) => refuse(
                LanguageRule::Token,
                format!(
                    "`{}` holds identifier tokens: tokens are only joined (a.token = b.token) and counted (count(DISTINCT token)), never {what}",
                    c.column
                ),
            ),
        }
    }

    /// A group key: a column or `date_trunc('unit', column)`.
    fn key(&mut self, expr: &Expr, relations: &[Relation], depth: usize) -> Result<Key, Refusal> {
        self.count(depth)?;
        match expr {
            Expr::Nested(e) => self.key(e, relations, depth + 1),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                let (c, _) = self.attribute(expr, relations, depth + 1, "shown or grouped")?;
                Ok(Key::Column(c))
            }
            Expr::Function(f) if function_name(&f.name).as_deref() == Some("date_trunc") => {
                let args = plain_args(f)?;
                let [unit, column] = args.as_slice() else {
                    return refuse(
                        LanguageRule::Shape,
                        "date_trunc takes a unit and a date or time column",
                    );
                };
                let unit = match unit {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => TruncUnit::parse(s),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| Refusal {
                    rule: LanguageRule::Shape,
                    message: "date_trunc's unit is one of 'year', 'quarter', 'month', 'week', 'day', 'hour', 'minute'".into(),
                })?;
                let (c, t) =
                    self.attribute(column, relations, depth + 1, "passed to a function")?;
                if !matches!(t, ColumnType::Date | ColumnType::Timestamp) {
                    return refuse(
                        LanguageRule::Shape,
                        format!(
                            "date_trunc needs a date or time column; `{}` is not one",
                            c.column
                        ),
                    );
                }
                Ok(Key::Trunc(unit, c))
            }
            Expr::Function(_) => refuse(
                LanguageRule::Shape,
                "group keys are columns or date_trunc('unit', column); other functions are not answered",
            ),
            _ => refuse(
                LanguageRule::Shape,
                "a result column is a group key (a column, or date_trunc of one) or an aggregate; expressions, constants and subqueries are not answered",
            ),
        }
    }

    /// A GROUP BY entry: a key expression, a shown key's name, or its position.
    fn group_key(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        outputs: &[(String, Output)],
        keys: &[Key],
    ) -> Result<Key, Refusal> {
        if let Some(i) = self.output_reference(expr, outputs)? {
            return match &outputs[i].1 {
                Output::Key(k) => Ok(keys[*k].clone()),
                Output::Aggregate(_) => refuse(
                    LanguageRule::Shape,
                    format!("GROUP BY names `{}`, an aggregate", outputs[i].0),
                ),
            };
        }
        self.key(expr, relations, 1)
    }

    /// A reference to a result column by position (1-based) or by a name that is not a
    /// column of the tables.
    fn output_reference(
        &mut self,
        expr: &Expr,
        outputs: &[(String, Output)],
    ) -> Result<Option<usize>, Refusal> {
        match expr {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let i: usize = n.to_string().parse().unwrap_or(0);
                    if i == 0 || i > outputs.len() {
                        return refuse(
                            LanguageRule::Shape,
                            format!("position {n} is not a result column"),
                        );
                    }
                    Ok(Some(i - 1))
                }
                _ => Ok(None),
            },
            Expr::Identifier(i) => {
                let name = ident(i);
                Ok(outputs.iter().position(|(n, _)| *n == name))
            }
            _ => Ok(None),
        }
    }

    /// An aggregate of the select list, or None when `expr` is not an aggregate call.
    fn aggregate(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        depth: usize,
    ) -> Result<Option<Aggregate>, Refusal> {
        self.count(depth)?;
        let f = match expr {
            Expr::Nested(e) => return self.aggregate(e, relations, depth + 1),
            Expr::Function(f) => f,
            _ => return Ok(None),
        };
        let Some(name) = function_name(&f.name) else {
            return Ok(None);
        };
        if !matches!(name.as_str(), "count" | "sum" | "avg") {
            return match name.as_str() {
                "min"
                | "max"
                | "median"
                | "first_value"
                | "last_value"
                | "nth_value"
                | "string_agg"
                | "array_agg"
                | "listagg"
                | "group_concat"
                | "approx_percentile_cont"
                | "percentile_cont"
                | "percentile_disc"
                | "approx_median"
                | "approx_distinct"
                | "mode"
                | "any_value"
                | "bit_and"
                | "bit_or"
                | "bit_xor"
                | "bool_and"
                | "bool_or"
                | "stddev"
                | "stddev_pop"
                | "stddev_samp"
                | "var"
                | "var_pop"
                | "var_samp"
                | "variance"
                | "covar"
                | "covar_pop"
                | "covar_samp"
                | "corr"
                | "regr_slope"
                | "grouping" => refuse(
                    LanguageRule::Aggregate,
                    format!(
                        "`{name}` is not released: the aggregates are count(*), count(column), count(DISTINCT column), sum(column) and avg(column)"
                    ),
                ),
                _ => Ok(None),
            };
        }
        if f.over.is_some() {
            return refuse(
                LanguageRule::Shape,
                "window functions (OVER) are not answered",
            );
        }
        if f.filter.is_some() {
            return refuse(
                LanguageRule::Aggregate,
                "FILTER (WHERE ...) inside an aggregate narrows one group below what the gate counts: put the condition in WHERE",
            );
        }
        if f.null_treatment.is_some()
            || !f.within_group.is_empty()
            || !matches!(f.parameters, FunctionArguments::None)
            || f.uses_odbc_syntax
        {
            return refuse(
                LanguageRule::Aggregate,
                format!("`{name}` takes one column, and nothing else"),
            );
        }
        let FunctionArguments::List(list) = &f.args else {
            return refuse(
                LanguageRule::Aggregate,
                format!("`{name}` takes one column"),
            );
        };
        if !list.clauses.is_empty() {
            return refuse(
                LanguageRule::Aggregate,
                format!("`{name}` takes one column, without ORDER BY or other clauses"),
            );
        }
        let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
        let [arg] = list.args.as_slice() else {
            return refuse(
                LanguageRule::Aggregate,
                format!("`{name}` takes exactly one column"),
            );
        };
        let arg = match arg {
            FunctionArg::Unnamed(a) => a,
            _ => {
                return refuse(
                    LanguageRule::Aggregate,
                    format!("`{name}` takes one unnamed column"),
                );
            }
        };
        let column_expr = match arg {
            FunctionArgExpr::Wildcard if name == "count" && !distinct => {
                return Ok(Some(Aggregate::CountRows));
            }
            FunctionArgExpr::Expr(Expr::Value(v))
                if name == "count"
                    && !distinct
                    && matches!(&v.value, Value::Number(n, _) if n == "1") =>
            {
                return Ok(Some(Aggregate::CountRows));
            }
            FunctionArgExpr::Expr(e) => e,
            _ => {
                return refuse(
                    LanguageRule::Aggregate,
                    format!("`{name}` takes one column"),
                );
            }
        };
        let (column, kind) = match self.column(column_expr, relations, depth + 1) {
            Ok(ok) => ok,
            Err(e) if e.rule == LanguageRule::Shape => {
                return refuse(
                    LanguageRule::Aggregate,
                    format!(
                        "`{name}` takes a plain column: conditions (CASE), arithmetic and functions inside an aggregate are not answered, since they narrow a group below what the gate counts"
                    ),
                );
            }
            Err(e) => return Err(e),
        };
        Ok(Some(match (name.as_str(), distinct, kind) {
            ("count", false, _) => Aggregate::Count(column),
            ("count", true, _) => Aggregate::CountDistinct(column),
            (_, true, _) => {
                return refuse(
                    LanguageRule::Aggregate,
                    format!("`{name}(DISTINCT ...)` is not answered; DISTINCT is for count only"),
                );
            }
            (_, false, ColumnKind::Token(_)) => {
                return refuse(
                    LanguageRule::Token,
                    format!(
                        "`{}` holds identifier tokens: tokens are only joined and counted, never summed or averaged",
                        column.column
                    ),
                );
            }
            (_, false, ColumnKind::Attribute(t)) => {
                if !matches!(t, ColumnType::Int64 | ColumnType::Float64) {
                    return refuse(
                        LanguageRule::Aggregate,
                        format!(
                            "`{name}` needs a number column; `{}` is not one",
                            column.column
                        ),
                    );
                }
                if name == "sum" {
                    Aggregate::Sum(column)
                } else {
                    Aggregate::Avg(column)
                }
            }
        }))
    }

    fn aggregate_name(&self, agg: &Aggregate) -> String {
        match agg {
            Aggregate::CountRows => "count(*)".into(),
            Aggregate::Count(c) => format!("count({})", c.column),
            Aggregate::CountDistinct(c) => format!("count(DISTINCT {})", c.column),
            Aggregate::Sum(c) => format!("sum({})", c.column),
            Aggregate::Avg(c) => format!("avg({})", c.column),
        }
    }

    /// A row condition: a column compared with constants, combined with AND, OR and NOT.
    fn condition(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        depth: usize,
    ) -> Result<Condition, Refusal> {
        self.count(depth)?;
        let d = depth + 1;
        match expr {
            Expr::Nested(e) => self.condition(e, relations, d),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    let l = self.condition(left, relations, d)?;
                    let r = self.condition(right, relations, d)?;
                    Ok(if matches!(op, BinaryOperator::And) {
                        Condition::And(vec![l, r])
                    } else {
                        Condition::Or(vec![l, r])
                    })
                }
                _ => {
                    let Some(cmp) = Comparison::from_operator(op) else {
                        return refuse(
                            LanguageRule::Condition,
                            "conditions compare a column with a constant (=, <>, <, <=, >, >=), or use IN, BETWEEN, IS NULL, AND, OR, NOT",
                        );
                    };
                    // Column on the left or the right.
                    let column_side = |e: &Expr| {
                        matches!(
                            e,
                            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Nested(_)
                        )
                    };
                    let (col, constant, cmp) = if column_side(left) && !column_side(right) {
                        (left, right, cmp)
                    } else if column_side(right) && !column_side(left) {
                        (right, left, flip(cmp))
                    } else if column_side(left) && column_side(right) {
                        return refuse(
                            LanguageRule::Condition,
                            "a condition compares a column with a constant; comparing two columns is a join, and joins are token equalities in ON",
                        );
                    } else {
                        return refuse(
                            LanguageRule::Condition,
                            "a condition compares a column with a constant: expressions, functions and subqueries are not answered in conditions",
                        );
                    };
                    let (c, t) = self.attribute(col, relations, d, "compared or filtered")?;
                    let k = self.constant(constant, t, d, &c.column)?;
                    Ok(Condition::Compare(c, cmp, k))
                }
            },
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Condition::Not(Box::new(
                self.condition(expr, relations, d)?,
            ))),
            Expr::IsNull(e) | Expr::IsNotNull(e) => {
                let (c, _) = self.attribute(e, relations, d, "tested")?;
                Ok(Condition::IsNull {
                    column: c,
                    negated: matches!(expr, Expr::IsNotNull(_)),
                })
            }
            Expr::InList {
                expr: e,
                list,
                negated,
            } => {
                if list.len() > self.limits.max_in_list {
                    return refuse(
                        LanguageRule::Limits,
                        format!(
                            "an IN list holds at most {} values",
                            self.limits.max_in_list
                        ),
                    );
                }
                let (c, t) = self.attribute(e, relations, d, "compared or filtered")?;
                let mut values = Vec::with_capacity(list.len());
                for v in list {
                    values.push(self.constant(v, t, d, &c.column)?);
                }
                Ok(Condition::In {
                    column: c,
                    values,
                    negated: *negated,
                })
            }
            Expr::Between {
                expr: e,
                negated,
                low,
                high,
            } => {
                let (c, t) = self.attribute(e, relations, d, "compared or filtered")?;
                let low = self.constant(low, t, d, &c.column)?;
                let high = self.constant(high, t, d, &c.column)?;
                Ok(Condition::Between {
                    column: c,
                    low,
                    high,
                    negated: *negated,
                })
            }
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => refuse(
                LanguageRule::Shape,
                "subqueries in conditions are not answered: join through tokens instead",
            ),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => refuse(
                LanguageRule::Condition,
                "a condition compares a column with a constant (a bare column is not a condition)",
            ),
            _ => refuse(
                LanguageRule::Condition,
                "conditions compare a column with a constant (=, <>, <, <=, >, >=), or use IN, BETWEEN, IS NULL, AND, OR, NOT; functions, CASE and arithmetic are not answered",
            ),
        }
    }

    /// A constant compared with a column of type `t`.
    fn constant(
        &mut self,
        expr: &Expr,
        t: ColumnType,
        depth: usize,
        column: &str,
    ) -> Result<Constant, Refusal> {
        self.count(depth)?;
        let mismatch = || Refusal {
            rule: LanguageRule::Condition,
            message: format!(
                "`{column}` is compared with a constant of another type (it holds {})",
                type_name(t)
            ),
        };
        match expr {
            Expr::Nested(e) => self.constant(e, t, depth + 1, column),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => match self.constant(expr, t, depth + 1, column)? {
                Constant::Int(i) => Ok(Constant::Int(i.checked_neg().ok_or_else(mismatch)?)),
                Constant::Float(x) => Ok(Constant::Float(-x)),
                _ => Err(mismatch()),
            },
            Expr::Value(v) => match (&v.value, t) {
                (Value::Number(n, _), ColumnType::Int64) => n
                    .to_string()
                    .parse()
                    .map(Constant::Int)
                    .map_err(|_| mismatch()),
                (Value::Number(n, _), ColumnType::Float64) => n
                    .to_string()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .map(Constant::Float)
                    .ok_or_else(mismatch),
                (Value::SingleQuotedString(s), ColumnType::Utf8) => {
                    if s.len() > 1000 {
                        return refuse(
                            LanguageRule::Limits,
                            "a text constant is at most 1000 bytes",
                        );
                    }
                    Ok(Constant::Text(s.clone()))
                }
                (Value::SingleQuotedString(s), ColumnType::Date) => {
                    parse_date(s).map(Constant::Date).ok_or_else(mismatch)
                }
                (Value::SingleQuotedString(s), ColumnType::Timestamp) => parse_timestamp(s)
                    .map(Constant::Timestamp)
                    .ok_or_else(mismatch),
                (Value::Boolean(b), ColumnType::Bool) => Ok(Constant::Bool(*b)),
                (Value::Null, _) => refuse(
                    LanguageRule::Condition,
                    "comparing with NULL is never true: write IS NULL or IS NOT NULL",
                ),
                _ => Err(mismatch()),
            },
            Expr::TypedString(ts) => {
                let text = match &ts.value.value {
                    Value::SingleQuotedString(s) => s.as_str(),
                    _ => return Err(mismatch()),
                };
                match (&ts.data_type, t) {
                    (ast::DataType::Date, ColumnType::Date | ColumnType::Timestamp) => {
                        parse_date(text).map(Constant::Date).ok_or_else(mismatch)
                    }
                    (ast::DataType::Timestamp(..), ColumnType::Timestamp | ColumnType::Date) => {
                        parse_timestamp(text)
                            .map(Constant::Timestamp)
                            .ok_or_else(mismatch)
                    }
                    _ => Err(mismatch()),
                }
            }
            Expr::Function(f)
                if function_name(&f.name).as_deref() == Some("current_date")
                    && matches!(f.args, FunctionArguments::None)
                    && matches!(t, ColumnType::Date | ColumnType::Timestamp) =>
            {
                Ok(Constant::CurrentDate { minus_days: 0 })
            }
            Expr::BinaryOp { left, op, right }
                if matches!(op, BinaryOperator::Minus | BinaryOperator::Plus)
                    && matches!(t, ColumnType::Date | ColumnType::Timestamp) =>
            {
                let base = self.constant(left, t, depth + 1, column)?;
                let Constant::CurrentDate { minus_days: 0 } = base else {
                    return Err(mismatch());
                };
                let days = interval_days(right).ok_or_else(|| Refusal {
                    rule: LanguageRule::Condition,
                    message: "dates are written DATE 'YYYY-MM-DD', or current_date plus or minus INTERVAL 'n' DAY".into(),
                })?;
                Ok(Constant::CurrentDate {
                    minus_days: if matches!(op, BinaryOperator::Minus) {
                        days
                    } else {
                        -days
                    },
                })
            }
            _ => refuse(
                LanguageRule::Condition,
                "a condition compares a column with a constant: expressions, functions and subqueries are not answered in conditions",
            ),
        }
    }

    fn having(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        aggregates: &[Aggregate],
        outputs: &[(String, Output)],
        depth: usize,
    ) -> Result<Having, Refusal> {
        self.count(depth)?;
        let d = depth + 1;
        let only = "HAVING tests released aggregates against numbers (HAVING count(*) > 20): other conditions belong in WHERE";
        match expr {
            Expr::Nested(e) => self.having(e, relations, aggregates, outputs, d),
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => Ok(Having::Not(Box::new(
                self.having(expr, relations, aggregates, outputs, d)?,
            ))),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::And | BinaryOperator::Or => {
                    let l = self.having(left, relations, aggregates, outputs, d)?;
                    let r = self.having(right, relations, aggregates, outputs, d)?;
                    Ok(if matches!(op, BinaryOperator::And) {
                        Having::And(vec![l, r])
                    } else {
                        Having::Or(vec![l, r])
                    })
                }
                _ => {
                    let cmp = Comparison::from_operator(op).ok_or_else(|| Refusal {
                        rule: LanguageRule::Shape,
                        message: only.into(),
                    })?;
                    let (agg_side, number_side, cmp) = match (number(left), number(right)) {
                        (None, Some(n)) => (left, n, cmp),
                        (Some(n), None) => (right, n, flip(cmp)),
                        _ => return refuse(LanguageRule::Shape, only),
                    };
                    let index =
                        self.released_aggregate(agg_side, relations, aggregates, outputs, d)?;
                    Ok(Having::Compare(index, cmp, number_side))
                }
            },
            _ => refuse(LanguageRule::Shape, only),
        }
    }

    /// The index of a shown aggregate named by its alias or written again.
    fn released_aggregate(
        &mut self,
        expr: &Expr,
        relations: &[Relation],
        aggregates: &[Aggregate],
        outputs: &[(String, Output)],
        depth: usize,
    ) -> Result<usize, Refusal> {
        if let Expr::Identifier(i) = expr {
            let name = ident(i);
            if let Some((_, Output::Aggregate(a))) = outputs.iter().find(|(n, _)| *n == name) {
                return Ok(*a);
            }
        }
        match self.aggregate(expr, relations, depth)? {
            Some(agg) => aggregates
                .iter()
                .position(|a| *a == agg)
                .ok_or_else(|| Refusal {
                    rule: LanguageRule::Shape,
                    message: "HAVING may only test aggregates the query shows".into(),
                }),
            None => refuse(
                LanguageRule::Shape,
                "HAVING tests released aggregates against numbers (HAVING count(*) > 20): other conditions belong in WHERE",
            ),
        }
    }

    fn order(
        &mut self,
        query: &Query,
        relations: &[Relation],
        outputs: &[(String, Output)],
        keys: &[Key],
        aggregates: &[Aggregate],
    ) -> Result<Vec<(usize, bool)>, Refusal> {
        let Some(order_by) = &query.order_by else {
            return Ok(Vec::new());
        };
        if order_by.interpolate.is_some() {
            return refuse(LanguageRule::Syntax, "INTERPOLATE is not answered");
        }
        let OrderByKind::Expressions(exprs) = &order_by.kind else {
            return refuse(
                LanguageRule::Syntax,
                "ORDER BY ALL: name the result columns",
            );
        };
        let mut out = Vec::new();
        for e in exprs {
            if e.with_fill.is_some() {
                return refuse(LanguageRule::Syntax, "WITH FILL is not answered");
            }
            let index = match self.output_reference(&e.expr, outputs)? {
                Some(i) => i,
                None => {
                    let found = match self.aggregate(&e.expr, relations, 1)? {
                        Some(agg) => outputs.iter().position(
                            |(_, o)| matches!(o, Output::Aggregate(a) if aggregates[*a] == agg),
                        ),
                        None => {
                            let key = self.key(&e.expr, relations, 1)?;
                            outputs
                                .iter()
                                .position(|(_, o)| matches!(o, Output::Key(k) if keys[*k] == key))
                        }
                    };
                    found.ok_or_else(|| Refusal {
                        rule: LanguageRule::Shape,
                        message: "ORDER BY sorts by result columns only".into(),
                    })?
                }
            };
            out.push((index, e.options.asc == Some(false)));
        }
        Ok(out)
    }
}

/// The last name of a column reference, for messages.
fn column_text(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        Expr::Nested(e) => column_text(e),
        _ => String::new(),
    }
}

fn flip(c: Comparison) -> Comparison {
    match c {
        Comparison::Lt => Comparison::Gt,
        Comparison::LtEq => Comparison::GtEq,
        Comparison::Gt => Comparison::Lt,
        Comparison::GtEq => Comparison::LtEq,
        other => other,
    }
}

fn number(e: &Expr) -> Option<f64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.to_string().parse().ok().filter(|x: &f64| x.is_finite()),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => number(expr).map(|x| -x),
        Expr::Nested(e) => number(e),
        _ => None,
    }
}

/// The days of `INTERVAL 'n' DAY` (n ≤ 36600).
fn interval_days(e: &Expr) -> Option<i64> {
    let Expr::Interval(i) = e else { return None };
    if i.last_field.is_some() || i.leading_precision.is_some() {
        return None;
    }
    let n: i64 = match i.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.trim().parse().ok()?,
            Value::Number(n, _) => n.to_string().parse().ok()?,
            _ => return None,
        },
        _ => return None,
    };
    let days = match i.leading_field {
        Some(DateTimeField::Day | DateTimeField::Days) => n,
        Some(DateTimeField::Week(None) | DateTimeField::Weeks) => n.checked_mul(7)?,
        _ => return None,
    };
    (0..=36_600).contains(&days).then_some(days)
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

fn parse_timestamp(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| parse_date(s).and_then(|d| d.and_hms_opt(0, 0, 0)))
}

fn type_name(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Utf8 => "text",
        ColumnType::Int64 => "integers",
        ColumnType::Float64 => "numbers",
        ColumnType::Bool => "true/false",
        ColumnType::Date => "dates",
        ColumnType::Timestamp => "times",
    }
}

/// The name a key gets in the result when not renamed.
fn key_name(k: &Key) -> String {
    match k {
        Key::Column(c) => c.column.clone(),
        Key::Trunc(u, c) => format!("date_trunc('{}', {})", u.as_str(), c.column),
    }
}

/// An identifier as DataFusion reads it: unquoted names fold to lower case.
fn ident(i: &ast::Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_ascii_lowercase(),
    }
}

fn object_name(name: &ObjectName) -> Result<Vec<String>, Refusal> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Ok(ident(i)),
            ObjectNamePart::Function(_) => refuse(
                LanguageRule::Syntax,
                "table names are plain names: <partner>.<dataset>",
            ),
        })
        .collect()
}

fn function_name(name: &ObjectName) -> Option<String> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// The plain arguments of a non-aggregate function call.
fn plain_args(f: &ast::Function) -> Result<Vec<&Expr>, Refusal> {
    let bad = || Refusal {
        rule: LanguageRule::Shape,
        message: "this function takes plain arguments only".into(),
    };
    if f.over.is_some()
        || f.filter.is_some()
        || f.null_treatment.is_some()
        || !f.within_group.is_empty()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return Err(bad());
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(bad());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(bad());
    }
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(bad()),
        })
        .collect()
}

/// The SELECT of a query that is one SELECT, and nothing else around it.
fn plain_select(query: &Query) -> Result<&Select, Refusal> {
    let Query {
        with: _,
        body,
        order_by: _,
        limit_clause: _,
        fetch,
        locks,
        for_clause,
        settings,
        format_clause,
        pipe_operators,
    } = query;
    if fetch.is_some()
        || !locks.is_empty()
        || for_clause.is_some()
        || settings.is_some()
        || format_clause.is_some()
        || !pipe_operators.is_empty()
    {
        return refuse(
            LanguageRule::Syntax,
            "FETCH, FOR, locks, SETTINGS, FORMAT and pipe operators are not answered",
        );
    }
    let select = match body.as_ref() {
        SetExpr::Select(s) => s.as_ref(),
        SetExpr::SetOperation { .. } => {
            return refuse(
                LanguageRule::Shape,
                "UNION, INTERSECT and EXCEPT combine results the gate releases separately: ask each question on its own",
            );
        }
        SetExpr::Query(_) => {
            return refuse(LanguageRule::Syntax, "write the SELECT without parentheses");
        }
        _ => {
            return refuse(
                LanguageRule::Syntax,
                "only a SELECT is answered: no VALUES, TABLE or data changes",
            );
        }
    };
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection: _,
        exclude,
        into,
        from: _,
        lateral_views,
        prewhere,
        selection: _,
        connect_by,
        group_by: _,
        cluster_by,
        distribute_by,
        sort_by,
        having: _,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = select;
    if let Some(d) = distinct {
        return refuse(
            LanguageRule::Shape,
            match d {
                Distinct::Distinct | Distinct::On(_) | Distinct::All => {
                    "SELECT DISTINCT lists values: write GROUP BY with an aggregate"
                }
            },
        );
    }
    if !optimizer_hints.is_empty()
        || select_modifiers.is_some()
        || top.is_some()
        || exclude.is_some()
        || into.is_some()
        || !lateral_views.is_empty()
        || prewhere.is_some()
        || !connect_by.is_empty()
        || !cluster_by.is_empty()
        || !distribute_by.is_empty()
        || !sort_by.is_empty()
        || value_table_mode.is_some()
        || !matches!(flavor, SelectFlavor::Standard)
    {
        return refuse(
            LanguageRule::Syntax,
            "this SELECT uses clauses the gate does not answer (TOP, INTO, EXCLUDE, PREWHERE, CONNECT BY, CLUSTER/DISTRIBUTE/SORT BY, ...)",
        );
    }
    if !named_window.is_empty() || qualify.is_some() {
        return refuse(
            LanguageRule::Shape,
            "window functions (WINDOW, QUALIFY) are not answered",
        );
    }
    Ok(select)
}

fn limit(query: &Query) -> Result<Option<u64>, Refusal> {
    let Some(clause) = &query.limit_clause else {
        return Ok(None);
    };
    let LimitClause::LimitOffset {
        limit,
        offset,
        limit_by,
    } = clause
    else {
        return refuse(LanguageRule::Syntax, "write LIMIT n");
    };
    if offset.is_some() || !limit_by.is_empty() {
        return refuse(LanguageRule::Syntax, "OFFSET and LIMIT BY are not answered");
    }
    match limit {
        None => Ok(None),
        Some(e) => match number(e) {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 1e6 => Ok(Some(n as u64)),
            _ => refuse(
                LanguageRule::Syntax,
                "LIMIT takes a whole number up to 1000000",
            ),
        },
    }
}

/// The columns of a base table as the language sees them.
fn table_columns(contract: &Contract, instance: usize) -> BTreeMap<String, Bound> {
    let mut out = BTreeMap::new();
    for c in &contract.columns {
        match (c.role, c.kind) {
            (Role::Identifier, Some(kind)) => {
                out.insert(
                    c.token_name().to_owned(),
                    Bound::Column(
                        ColumnAt {
                            instance,
                            column: c.token_name().to_owned(),
                        },
                        ColumnKind::Token(kind),
                    ),
                );
                if c.reveal {
                    out.insert(c.name.clone(), Bound::RawIdentifier);
                }
            }
            (Role::Attribute, _) => {
                out.insert(
                    c.name.clone(),
                    Bound::Column(
                        ColumnAt {
                            instance,
                            column: c.name.clone(),
                        },
                        ColumnKind::Attribute(c.column_type),
                    ),
                );
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
