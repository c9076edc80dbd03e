//! From per-unit partial aggregates to released groups: contribution bounds, the release
//! threshold, noise, then HAVING, ORDER BY and LIMIT on what is released.
//!
//! Each privacy unit (the owner of a row of the analysis' first table) adds at most
//! `max_rows` rows in all to the released statistics — its groups taken in random order
//! until the rows run out, a group's sums scaled to the rows kept and every value clamped to
//! the contract's bounds — so a statistic's vector moves by at most `max_rows · bound` when
//! one unit's rows come or go: the noise's sensitivity. For the release decision a unit
//! counts in at most `max_groups` of its groups, chosen at random. A group is released only
//! when it has at least k units and its noisy unit count reaches a threshold high enough
//! that a group of exactly k units passes it with probability at most δ: the floor k is
//! kept, and crossing it is no oracle.

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use rand::Rng;

use crate::cells::{Cell, cells};
use crate::language::{Analysis, Having, Output};
use crate::noise::Mechanism;
use crate::sql::{GatePlan, Measure, Statistic};

/// How a purpose's answers are protected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Protection {
    pub min_group_size: u64,
    /// None: no noise (exact answers above k only).
    pub noise: Option<NoiseParams>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NoiseParams {
    pub epsilon: f64,
    pub delta: f64,
}

/// One group's partial sums.
struct Group {
    key: Vec<Cell>,
    /// Privacy units of the first table (after bounds).
    units: u64,
    measures: Vec<f64>,
    /// Per other table: its units in this group (exact).
    others: Vec<u64>,
}

/// Groups by key, built from the partials stream.
pub(crate) struct Accumulator<'p> {
    plan: &'p GatePlan,
    bounded: bool,
    groups: Vec<Group>,
    /// Group index by the key's row encoding (arrow's row format: no allocation per row).
    index: HashMap<Box<[u8]>, usize>,
    /// The key columns' encoder, and their types as the first batch had them; later
    /// batches (and the units query) are cast to these types so equal keys encode alike.
    encoder: Option<(RowConverter, Vec<DataType>)>,
    /// The unit whose rows are being read, and its (group, measures).
    current: Option<[u8; 16]>,
    pending: Vec<(usize, Vec<f64>)>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReleaseError {
    #[error("the gate's partial result has an unexpected shape")]
    Shape,
}

impl<'p> Accumulator<'p> {
    pub fn new(plan: &'p GatePlan, bounded: bool) -> Self {
        Accumulator {
            plan,
            bounded,
            groups: Vec::new(),
            index: HashMap::new(),
            encoder: None,
            current: None,
            pending: Vec::new(),
        }
    }

    /// Groups seen so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// The group of each row of `columns` (the key columns of one batch), creating groups
    /// for keys not seen before.
    fn groups_of(&mut self, columns: &[ArrayRef], rows: usize) -> Result<Vec<usize>, ReleaseError> {
        if columns.is_empty() {
            // No GROUP BY: one group.
            if self.groups.is_empty() && rows > 0 {
                self.new_group(Vec::new());
            }
            return Ok(vec![0; rows]);
        }
        if self.encoder.is_none() {
            let types: Vec<DataType> = columns.iter().map(|c| c.data_type().clone()).collect();
            let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
            let converter = RowConverter::new(fields).map_err(|_| ReleaseError::Shape)?;
            self.encoder = Some((converter, types));
        }
        let Some((converter, types)) = &self.encoder else {
            return Err(ReleaseError::Shape);
        };
        let columns: Vec<ArrayRef> = columns
            .iter()
            .zip(types)
            .map(|(c, t)| {
                if c.data_type() == t {
                    Ok(c.clone())
                } else {
                    arrow_cast::cast(c, t).map_err(|_| ReleaseError::Shape)
                }
            })
            .collect::<Result<_, _>>()?;
        let encoded = converter
            .convert_columns(&columns)
            .map_err(|_| ReleaseError::Shape)?;
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let bytes = encoded.row(row);
            let group = match self.index.get(bytes.as_ref()) {
                Some(g) => *g,
                None => {
                    let key = columns
                        .iter()
                        .map(|c| {
                            cells(&c.slice(row, 1))
                                .ok()
                                .and_then(|v| v.into_iter().next())
                                .ok_or(ReleaseError::Shape)
                        })
                        .collect::<Result<Vec<Cell>, _>>()?;
                    let g = self.new_group(key);
                    self.index.insert(bytes.as_ref().into(), g);
                    g
                }
            };
            out.push(group);
        }
        Ok(out)
    }

    fn new_group(&mut self, key: Vec<Cell>) -> usize {
        self.groups.push(Group {
            key,
            units: 0,
            measures: vec![0.0; self.plan.measures.len()],
            others: vec![0; self.plan.other_instances],
        });
        self.groups.len() - 1
    }

    /// Adds one batch of the partials query (`__owner`?, keys, measures).
    pub fn add(
        &mut self,
        batch: &RecordBatch,
        keys: usize,
        rng: &mut impl Rng,
    ) -> Result<(), ReleaseError> {
        let owner_cols = usize::from(self.plan.has_owner);
        if batch.num_columns() != owner_cols + keys + self.plan.measures.len() {
            return Err(ReleaseError::Shape);
        }
        let owners = if self.plan.has_owner {
            Some(
                batch
                    .column(0)
                    .as_fixed_size_binary_opt()
                    .ok_or(ReleaseError::Shape)?,
            )
        } else {
            None
        };
        let groups = self.groups_of(
            &batch.columns()[owner_cols..owner_cols + keys],
            batch.num_rows(),
        )?;
        let measures: Vec<Vec<f64>> = (0..self.plan.measures.len())
            .map(|i| floats(batch.column(owner_cols + keys + i)))
            .collect::<Result<_, _>>()?;
        for (row, group) in groups.into_iter().enumerate() {
            let values: Vec<f64> = measures.iter().map(|m| m[row]).collect();
            let owner: Option<[u8; 16]> = match owners {
                Some(o) if !o.is_null(row) => o.value(row).try_into().ok(),
                _ => None,
            };
            match owner {
                None => {
                    // Rows that name nobody: each is a unit of its own, one row each.
                    self.flush(rng);
                    let g = &mut self.groups[group];
                    g.units += values.first().copied().unwrap_or(0.0).max(0.0) as u64;
                    for (acc, v) in g.measures.iter_mut().zip(&values) {
                        *acc += v;
                    }
                }
                Some(o) => {
                    if self.current != Some(o) {
                        self.flush(rng);
                        self.current = Some(o);
                    }
                    self.pending.push((group, values));
                }
            }
        }
        Ok(())
    }

    /// Bounds the current unit's contribution and adds it.
    pub fn flush(&mut self, rng: &mut impl Rng) {
        if self.pending.is_empty() {
            self.current = None;
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        self.current = None;
        if !self.bounded {
            for (group, values) in pending {
                let g = &mut self.groups[group];
                g.units += 1;
                for (acc, v) in g.measures.iter_mut().zip(values) {
                    *acc += v;
                }
            }
            return;
        }
        let unit = &self.plan.unit;
        // Random order: which groups keep the unit's rows, and which count it for release.
        for i in (1..pending.len()).rev() {
            pending.swap(i, rng.gen_range(0..=i));
        }
        let mut rows_left = f64::from(unit.max_rows);
        for (n, (group, values)) in pending.into_iter().enumerate() {
            let g = &mut self.groups[group];
            if n < unit.max_groups as usize {
                g.units += 1;
            }
            let rows = values.first().copied().unwrap_or(0.0).max(0.0);
            let kept = rows.min(rows_left);
            rows_left -= kept;
            if kept <= 0.0 {
                continue;
            }
            let share = kept / rows.max(1.0);
            for ((acc, v), m) in g.measures.iter_mut().zip(values).zip(&self.plan.measures) {
                *acc += match m {
                    Measure::Rows => kept,
                    Measure::NonNull(_) => (v * share).min(kept),
                    Measure::Distinct(_) => v.min(kept),
                    Measure::Sum {
                        bounds: [lo, hi], ..
                    } => (v * share).clamp(kept * lo.min(0.0), kept * hi.max(0.0)),
                };
            }
        }
    }

    /// Adds one batch of the units query (keys, then per other table distinct and nameless).
    pub fn add_units(&mut self, batch: &RecordBatch, keys: usize) -> Result<(), ReleaseError> {
        let others = self.plan.other_instances;
        if batch.num_columns() != keys + 2 * others {
            return Err(ReleaseError::Shape);
        }
        let groups = self.groups_of(&batch.columns()[..keys], batch.num_rows())?;
        let counts: Vec<Vec<f64>> = (0..2 * others)
            .map(|i| floats(batch.column(keys + i)))
            .collect::<Result<_, _>>()?;
        for (row, group) in groups.into_iter().enumerate() {
            for j in 0..others {
                let units = counts[2 * j][row] + counts[2 * j + 1][row];
                self.groups[group].others[j] = units.max(0.0) as u64;
            }
        }
        Ok(())
    }
}

fn floats(array: &ArrayRef) -> Result<Vec<f64>, ReleaseError> {
    let cast = arrow_cast::cast(array, &DataType::Float64).map_err(|_| ReleaseError::Shape)?;
    let a = cast.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| if a.is_null(i) { 0.0 } else { a.value(i) })
        .collect())
}

/// What was released, and how it was protected.
pub(crate) struct Released {
    pub rows: Vec<Vec<Cell>>,
    /// Per aggregate column: the noise's standard deviation (None without noise).
    pub deviations: Vec<Option<f64>>,
    /// The noisy unit count a group had to reach (None without noise).
    pub threshold: Option<f64>,
}

/// The sensitivity (over all groups together) and grid step of each measure, when one
/// unit adds at most `rows` rows.
fn measure_scale(m: &Measure, rows: f64) -> (f64, f64) {
    match m {
        Measure::Rows | Measure::NonNull(_) | Measure::Distinct(_) => (rows, 1.0),
        Measure::Sum {
            bounds: [lo, hi], ..
        } => {
            let bound = lo.abs().max(hi.abs());
            let step = 10f64.powf((bound.log10().floor() - 3.0).max(-2.0));
            (rows * bound, step)
        }
    }
}

/// Decides which groups are released and with what values.
pub(crate) fn release(
    acc: Accumulator<'_>,
    analysis: &Analysis,
    protection: Protection,
    rng: &mut impl Rng,
) -> Released {
    let plan = acc.plan;
    let k = protection.min_group_size;
    let groups_bound = f64::from(plan.unit.max_groups);
    let rows_bound = f64::from(plan.unit.max_rows);
    // The measures the statistics read.
    let mut used = vec![false; plan.measures.len()];
    for s in &plan.statistics {
        match s {
            Statistic::Count(m) | Statistic::Sum(m) => used[*m] = true,
            Statistic::Avg { sum, count, .. } => {
                used[*sum] = true;
                used[*count] = true;
            }
        }
    }
    let m_used = used.iter().filter(|u| **u).count().max(1) as f64;
    let mechanisms: Option<(Mechanism, f64, Vec<Mechanism>)> = protection.noise.map(|p| {
        let selection = Mechanism::new(groups_bound, p.epsilon / 2.0, 1.0);
        let threshold = selection.threshold_above(k as f64, p.delta / groups_bound);
        let values = plan
            .measures
            .iter()
            .map(|m| {
                let (sensitivity, step) = measure_scale(m, rows_bound);
                Mechanism::new(sensitivity, p.epsilon / 2.0 / m_used, step)
            })
            .collect();
        (selection, threshold, values)
    });

    let mut rows = Vec::new();
    for g in &acc.groups {
        let counts = std::iter::once(g.units).chain(g.others.iter().copied());
        let passes = counts.into_iter().all(|units| {
            units >= k
                && match &mechanisms {
                    Some((sel, threshold, _)) => sel.release(units as f64, rng) >= *threshold,
                    None => true,
                }
        });
        if !passes {
            continue;
        }
        let values: Vec<f64> = match &mechanisms {
            Some((_, _, mechs)) => g
                .measures
                .iter()
                .zip(mechs)
                .zip(&used)
                .map(|((v, m), u)| if *u { m.release(*v, rng) } else { 0.0 })
                .collect(),
            None => g.measures.clone(),
        };
        let stats: Vec<Cell> = plan
            .statistics
            .iter()
            .map(|s| match s {
                Statistic::Count(m) => Cell::Int(values[*m].round().max(0.0) as i64),
                Statistic::Sum(m) => Cell::Float(values[*m]),
                Statistic::Avg { sum, count, bounds } => {
                    let n = values[*count];
                    if protection.noise.is_none() && n <= 0.0 {
                        Cell::Null
                    } else {
                        let avg = values[*sum] / n.max(1.0);
                        Cell::Float(if protection.noise.is_some() {
                            avg.clamp(bounds[0], bounds[1])
                        } else {
                            avg
                        })
                    }
                }
            })
            .collect();
        if let Some(h) = &analysis.having
            && !having_holds(h, &stats)
        {
            continue;
        }
        let row: Vec<Cell> = analysis
            .outputs
            .iter()
            .map(|(_, o)| match o {
                Output::Key(i) => g.key[*i].clone(),
                Output::Aggregate(i) => stats[*i].clone(),
            })
            .collect();
        rows.push(row);
    }
    for (column, descending) in analysis.order.iter().rev() {
        rows.sort_by(|a, b| {
            let o = compare(&a[*column], &b[*column]);
            if *descending { o.reverse() } else { o }
        });
    }
    if analysis.order.is_empty() {
        // Without ORDER BY, by group key, so the order says nothing of the data.
        rows.sort_by(|a, b| {
            a.iter()
                .zip(b)
                .map(|(x, y)| compare(x, y))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
    }
    if let Some(n) = analysis.limit {
        rows.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let deviations = plan
        .statistics
        .iter()
        .map(|s| {
            // An average is a noisy sum over a noisy count: its error depends on the
            // group's size, so no single figure is stated for it.
            mechanisms.as_ref().and_then(|(_, _, m)| match s {
                Statistic::Count(i) | Statistic::Sum(i) => Some(m[*i].standard_deviation()),
                Statistic::Avg { .. } => None,
            })
        })
        .collect();
    Released {
        rows,
        deviations,
        threshold: mechanisms.as_ref().map(|(_, t, _)| *t),
    }
}

fn number(c: &Cell) -> Option<f64> {
    match c {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(x) => Some(*x),
        _ => None,
    }
}

fn having_holds(h: &Having, stats: &[Cell]) -> bool {
    match h {
        Having::And(v) => v.iter().all(|x| having_holds(x, stats)),
        Having::Or(v) => v.iter().any(|x| having_holds(x, stats)),
        Having::Not(x) => !having_holds(x, stats),
        Having::Compare(i, cmp, n) => stats
            .get(*i)
            .and_then(number)
            .is_some_and(|v| cmp.holds(v, *n)),
    }
}

fn rank(c: &Cell) -> u8 {
    match c {
        Cell::Null => 0,
        Cell::Bool(_) => 1,
        Cell::Int(_) | Cell::Float(_) => 2,
        Cell::Text(_) => 3,
    }
}

fn compare(a: &Cell, b: &Cell) -> Ordering {
    match (a, b) {
        (Cell::Bool(x), Cell::Bool(y)) => x.cmp(y),
        (Cell::Text(x), Cell::Text(y)) => x.cmp(y),
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => rank(a).cmp(&rank(b)),
        },
    }
}
