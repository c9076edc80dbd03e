//! The SQL the gate runs, written from an [`Analysis`] (never from the analyst's text):
//! names come from the contracts and constants are re-written from their parsed values.
//!
//! - the *check* form is the analyst's question as one plain aggregate: the shared
//!   column-use checker (`blindwatch-policy`) judges it against the contracts;
//! - the *partials* form aggregates per (privacy unit, group), sorted by unit, so that the
//!   gate can bound each unit's contribution before anything is added up;
//! - the *units* form counts, per group, the privacy units of every other table the
//!   analysis joins in.

use std::collections::BTreeSet;
use std::fmt::Write;

use blindwatch_contract::{ContractSet, PrivacyUnit};

use crate::language::{Aggregate, Analysis, ColumnAt, Condition, Constant, Key};

/// What a released statistic measures, per unit and group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Measure {
    /// `count(*)`.
    Rows,
    /// `count(column)`.
    NonNull(ColumnAt),
    /// `count(DISTINCT column)`.
    Distinct(ColumnAt),
    /// `sum` of the column clamped to `bounds`.
    Sum { column: ColumnAt, bounds: [f64; 2] },
}

/// How the statistics an analysis releases are computed from the measures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statistic {
    /// One measure, released as it is (counts: rounded, never negative).
    Count(usize),
    Sum(usize),
    /// sum / count, clamped to the bounds.
    Avg {
        sum: usize,
        count: usize,
        bounds: [f64; 2],
    },
}

/// The gate's plan for one analysis.
#[derive(Debug, Clone)]
pub(crate) struct GatePlan {
    pub check: String,
    pub partials: String,
    /// Per other instance that has a units query column pair (distinct, anonymous).
    pub units: Option<String>,
    /// Number of other instances counted by `units`.
    pub other_instances: usize,
    /// Whether the first table names its rows' units (else every row is its own unit).
    pub has_owner: bool,
    pub measures: Vec<Measure>,
    /// One per aggregate of the analysis, in order.
    pub statistics: Vec<Statistic>,
    /// The first table's privacy unit (its bounds apply to the answer).
    pub unit: PrivacyUnit,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error("there is no contract for `{0}`")]
    NoContract(String),
    #[error(
        "`{0}` has no clipping bounds in its contract: a sum or average of it cannot be released with noise (the owning partner may add `bounds = [low, high]`)"
    )]
    NoBounds(String),
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn col(c: &ColumnAt) -> String {
    format!("\"i{}\".{}", c.instance, quote(&c.column))
}

fn key_sql(k: &Key) -> String {
    match k {
        Key::Column(c) => col(c),
        Key::Trunc(u, c) => format!("date_trunc('{}', {})", u.as_str(), col(c)),
    }
}

fn text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn constant(k: &Constant) -> String {
    match k {
        Constant::Int(i) => i.to_string(),
        Constant::Float(x) => format!("CAST({x:?} AS DOUBLE)"),
        Constant::Text(s) => text(s),
        Constant::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Constant::Date(d) => format!("DATE '{}'", d.format("%Y-%m-%d")),
        Constant::Timestamp(t) => format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S")),
        Constant::CurrentDate { minus_days } => match minus_days {
            0 => "current_date".into(),
            d if *d > 0 => format!("(current_date - INTERVAL '{d}' DAY)"),
            d => format!("(current_date + INTERVAL '{}' DAY)", d.unsigned_abs()),
        },
    }
}

fn condition(c: &Condition, out: &mut String) {
    match c {
        Condition::And(v) | Condition::Or(v) => {
            let op = if matches!(c, Condition::And(_)) {
                " AND "
            } else {
                " OR "
            };
            out.push('(');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                condition(x, out);
            }
            out.push(')');
        }
        Condition::Not(x) => {
            out.push_str("(NOT ");
            condition(x, out);
            out.push(')');
        }
        Condition::Compare(column, cmp, k) => {
            let _ = write!(out, "({} {} {})", col(column), cmp.sql(), constant(k));
        }
        Condition::In {
            column,
            values,
            negated,
        } => {
            let list: Vec<String> = values.iter().map(constant).collect();
            let not = if *negated { "NOT " } else { "" };
            let _ = write!(out, "({} {not}IN ({}))", col(column), list.join(", "));
        }
        Condition::Between {
            column,
            low,
            high,
            negated,
        } => {
            let not = if *negated { "NOT " } else { "" };
            let _ = write!(
                out,
                "({} {not}BETWEEN {} AND {})",
                col(column),
                constant(low),
                constant(high)
            );
        }
        Condition::IsNull { column, negated } => {
            let not = if *negated { "NOT " } else { "" };
            let _ = write!(out, "({} IS {not}NULL)", col(column));
        }
    }
}

/// `FROM ... JOIN ... ON ...` with the instances in an order where each one joins those
/// before it (the analysis' joins connect them all), then `WHERE`.
fn from_where(a: &Analysis) -> String {
    let mut out = format!("FROM {} AS \"i0\"", table_sql(&a.instances[0].table));
    let mut joined: BTreeSet<usize> = BTreeSet::from([0]);
    while joined.len() < a.instances.len() {
        let next = (0..a.instances.len()).find(|i| {
            !joined.contains(i)
                && a.joins.iter().any(|(l, r)| {
                    (l.instance == *i && joined.contains(&r.instance))
                        || (r.instance == *i && joined.contains(&l.instance))
                })
        });
        let Some(next) = next else { break };
        let on: Vec<String> = a
            .joins
            .iter()
            .filter(|(l, r)| {
                (l.instance == next && joined.contains(&r.instance))
                    || (r.instance == next && joined.contains(&l.instance))
            })
            .map(|(l, r)| format!("{} = {}", col(l), col(r)))
            .collect();
        let _ = write!(
            out,
            " JOIN {} AS \"i{next}\" ON {}",
            table_sql(&a.instances[next].table),
            on.join(" AND ")
        );
        joined.insert(next);
    }
    if let Some(f) = &a.filter {
        out.push_str(" WHERE ");
        condition(f, &mut out);
    }
    out
}

fn table_sql(table: &str) -> String {
    match table.split_once('.') {
        Some((p, d)) => format!("{}.{}", quote(p), quote(d)),
        None => quote(table),
    }
}

/// Whether every instance is joined to the first (the language guarantees it; the plan
/// refuses otherwise rather than run a cross join).
pub(crate) fn connected(a: &Analysis) -> bool {
    let mut joined: BTreeSet<usize> = BTreeSet::from([0]);
    loop {
        let before = joined.len();
        for (l, r) in &a.joins {
            if joined.contains(&l.instance) || joined.contains(&r.instance) {
                joined.insert(l.instance);
                joined.insert(r.instance);
            }
        }
        if joined.len() == before {
            break;
        }
    }
    joined.len() == a.instances.len()
}

fn owner_expr(instance: usize, unit: &PrivacyUnit) -> Option<String> {
    let cols: Vec<String> = unit
        .columns
        .iter()
        .map(|c| {
            col(&ColumnAt {
                instance,
                column: c.clone(),
            })
        })
        .collect();
    match cols.len() {
        0 => None,
        1 => cols.into_iter().next(),
        _ => Some(format!("coalesce({})", cols.join(", "))),
    }
}

fn none_named(instance: usize, unit: &PrivacyUnit) -> String {
    unit.columns
        .iter()
        .map(|c| {
            format!(
                "{} IS NULL",
                col(&ColumnAt {
                    instance,
                    column: c.clone(),
                })
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// A measure of one (unit, group) partial. `owner_column` is the unit's first column in
/// the first table: within one unit's group it holds the owner or nothing, so its distinct
/// count is 0 or 1 — computed as such, because DataFusion's `count(DISTINCT)` keeps a hash
/// set per group, and the partials have a group per unit.
fn measure_sql(m: &Measure, owner_column: Option<&ColumnAt>) -> String {
    match m {
        Measure::Rows => "count(*)".into(),
        Measure::NonNull(c) => format!("count({})", col(c)),
        Measure::Distinct(c) if Some(c) == owner_column => {
            format!("least(count({}), 1)", col(c))
        }
        Measure::Distinct(c) => format!("count(DISTINCT {})", col(c)),
        Measure::Sum {
            column,
            bounds: [lo, hi],
        } => format!(
            "sum(least(greatest(CAST({} AS DOUBLE), CAST({lo:?} AS DOUBLE)), CAST({hi:?} AS DOUBLE)))",
            col(column)
        ),
    }
}

/// The gate's plan: the check form, the partials and units forms, the measures.
pub(crate) fn plan(
    a: &Analysis,
    contracts: &ContractSet,
    noise: bool,
) -> Result<GatePlan, PlanError> {
    let unit_of = |i: usize| -> Result<PrivacyUnit, PlanError> {
        let table = &a.instances[i].table;
        contracts
            .get(table)
            .map(|c| c.privacy_unit.clone())
            .map_err(|_| PlanError::NoContract(table.clone()))
    };
    // A column that is never null counts like the rows (one measure less to add noise to).
    let required = |c: &ColumnAt| -> bool {
        contracts
            .get(&a.instances[c.instance].table)
            .ok()
            .and_then(|x| x.sealed_column(&c.column))
            .is_some_and(|x| x.required)
    };
    let bounds_of = |c: &ColumnAt| -> Result<[f64; 2], PlanError> {
        let table = &a.instances[c.instance].table;
        let contract = contracts
            .get(table)
            .map_err(|_| PlanError::NoContract(table.clone()))?;
        match contract.sealed_column(&c.column).and_then(|x| x.bounds) {
            Some(b) => Ok(b),
            // Without noise nothing needs clipping: the sum is exact.
            None if !noise => Ok([f64::MIN, f64::MAX]),
            None => Err(PlanError::NoBounds(format!("{table}.{}", c.column))),
        }
    };
    let unit = unit_of(0)?;

    let mut measures: Vec<Measure> = vec![Measure::Rows];
    let index = |m: Measure, measures: &mut Vec<Measure>| -> usize {
        match measures.iter().position(|x| *x == m) {
            Some(i) => i,
            None => {
                measures.push(m);
                measures.len() - 1
            }
        }
    };
    let mut statistics = Vec::new();
    for agg in &a.aggregates {
        statistics.push(match agg {
            Aggregate::CountRows => Statistic::Count(0),
            Aggregate::Count(c) => {
                Statistic::Count(index(Measure::NonNull(c.clone()), &mut measures))
            }
            Aggregate::CountDistinct(c) => {
                Statistic::Count(index(Measure::Distinct(c.clone()), &mut measures))
            }
            Aggregate::Sum(c) => {
                let bounds = bounds_of(c)?;
                Statistic::Sum(index(
                    Measure::Sum {
                        column: c.clone(),
                        bounds,
                    },
                    &mut measures,
                ))
            }
            Aggregate::Avg(c) => {
                let bounds = bounds_of(c)?;
                let sum = index(
                    Measure::Sum {
                        column: c.clone(),
                        bounds,
                    },
                    &mut measures,
                );
                let count = if required(c) {
                    0
                } else {
                    index(Measure::NonNull(c.clone()), &mut measures)
                };
                Statistic::Avg { sum, count, bounds }
            }
        });
    }

    let keys: Vec<String> = a.keys.iter().map(key_sql).collect();
    let body = from_where(a);
    let group_by = |extra: Option<&str>| -> String {
        let mut all: Vec<String> = extra.map(str::to_owned).into_iter().collect();
        all.extend(keys.iter().cloned());
        if all.is_empty() {
            String::new()
        } else {
            format!(" GROUP BY {}", all.join(", "))
        }
    };

    // The analyst's question, plainly.
    let mut select: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS \"__k{i}\""))
        .collect();
    for (i, agg) in a.aggregates.iter().enumerate() {
        let e = match agg {
            Aggregate::CountRows => "count(*)".to_owned(),
            Aggregate::Count(c) => format!("count({})", col(c)),
            Aggregate::CountDistinct(c) => format!("count(DISTINCT {})", col(c)),
            Aggregate::Sum(c) => format!("sum({})", col(c)),
            Aggregate::Avg(c) => format!("avg({})", col(c)),
        };
        select.push(format!("{e} AS \"__a{i}\""));
    }
    let check = format!("SELECT {} {body}{}", select.join(", "), group_by(None));

    // Per unit and group.
    let owner = owner_expr(0, &unit);
    let owner_column = unit.columns.first().map(|c| ColumnAt {
        instance: 0,
        column: c.clone(),
    });
    let mut select: Vec<String> = Vec::new();
    if let Some(o) = &owner {
        select.push(format!("{o} AS \"__owner\""));
    }
    select.extend(
        keys.iter()
            .enumerate()
            .map(|(i, k)| format!("{k} AS \"__k{i}\"")),
    );
    select.extend(
        measures
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{} AS \"__m{i}\"", measure_sql(m, owner_column.as_ref()))),
    );
    let order = if owner.is_some() {
        " ORDER BY \"__owner\""
    } else {
        ""
    };
    let partials = format!(
        "SELECT {} {body}{}{order}",
        select.join(", "),
        group_by(owner.as_deref())
    );

    // The units of every other table, per group.
    let mut units_select: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS \"__k{i}\""))
        .collect();
    for i in 1..a.instances.len() {
        let u = unit_of(i)?;
        match owner_expr(i, &u) {
            Some(o) => {
                units_select.push(format!("count(DISTINCT {o}) AS \"__d{i}\""));
                units_select.push(format!(
                    "count(*) FILTER (WHERE {}) AS \"__n{i}\"",
                    none_named(i, &u)
                ));
            }
            None => {
                units_select.push(format!("CAST(0 AS BIGINT) AS \"__d{i}\""));
                units_select.push(format!("count(*) AS \"__n{i}\""));
            }
        }
    }
    let units = (a.instances.len() > 1).then(|| {
        format!(
            "SELECT {} {body}{}",
            units_select.join(", "),
            group_by(None)
        )
    });

    Ok(GatePlan {
        check,
        partials,
        units,
        other_instances: a.instances.len() - 1,
        has_owner: owner.is_some(),
        measures,
        statistics,
        unit,
    })
}
