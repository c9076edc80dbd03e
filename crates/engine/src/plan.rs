//! A checked plan and the one place that builds it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_schema::SchemaRef;
use datafusion::logical_expr::LogicalPlan;

use crate::analysis::{self, ColumnRef, PlanAnalysis};
use crate::tables::StoredFile;
use crate::{EngineError, Snapshot};

/// Analyses `plan` over `snapshot` (how every base column is used, the lineage of every
/// output; token joins across token keys refused), requires every table it reads to be
/// readable, and only then wraps it with the exact columns its execution may decrypt.
pub(crate) fn check(
    engine: u64,
    snapshot: Arc<Snapshot>,
    plan: LogicalPlan,
) -> Result<CheckedPlan, EngineError> {
    let analysis = analysis::analyze(&plan, &|c| snapshot.token_domain(c))?;
    for t in &analysis.tables {
        snapshot.check_table(t)?;
    }
    let release = analysis.columns_by_table();
    Ok(CheckedPlan {
        engine,
        snapshot,
        plan,
        analysis,
        release,
    })
}

/// A planned query that passed the engine's checks: what it reads and how, and the column
/// keys its execution releases. Only [`check`] builds one (its fields are private to this
/// module), and [`crate::Engine::execute`] runs nothing else.
pub struct CheckedPlan {
    engine: u64,
    snapshot: Arc<Snapshot>,
    plan: LogicalPlan,
    analysis: PlanAnalysis,
    release: BTreeMap<String, BTreeSet<String>>,
}

impl std::fmt::Debug for CheckedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckedPlan")
            .field("analysis", &self.analysis)
            .field("release", &self.release)
            .finish()
    }
}

/// A contribution a plan reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ContributionRef {
    pub table: String,
    pub sequence: u64,
    /// Relative to the data directory.
    pub file: String,
}

impl CheckedPlan {
    /// How the plan uses every base column, and the lineage of its outputs.
    pub fn analysis(&self) -> &PlanAnalysis {
        &self.analysis
    }

    /// The DataFusion logical plan, as planned from SQL (before optimisation).
    pub fn logical_plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// Per table the plan scans, the columns whose keys its execution releases.
    pub fn released(&self) -> &BTreeMap<String, BTreeSet<String>> {
        &self.release
    }

    /// The result's schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    /// The contributions an execution reads (for the audit log: whose data a query used).
    pub fn contributions(&self) -> Vec<ContributionRef> {
        self.files()
            .map(|f| ContributionRef {
                table: f.table.clone(),
                sequence: f.sequence,
                file: f.file.clone(),
            })
            .collect()
    }

    /// Releases less: the key of `column` of `table` is withheld from this plan's execution.
    /// A plan that reads the column then fails with [`EngineError::NotReleased`]. It can
    /// only narrow what the plan releases, never widen it.
    pub fn withhold(mut self, table: &str, column: &str) -> CheckedPlan {
        if let Some(cols) = self.release.get_mut(table) {
            cols.remove(column);
        }
        self
    }

    /// The analysis of another plan over the same tables: a part of this plan (the input of
    /// one of its nodes, say) or a rewrite of it.
    pub fn lineage_of(&self, plan: &LogicalPlan) -> Result<PlanAnalysis, EngineError> {
        Ok(analysis::analyze(plan, &|c| self.snapshot.token_domain(c))?)
    }

    /// Whether `column` holds identifier tokens.
    pub fn is_token_column(&self, column: &ColumnRef) -> bool {
        self.snapshot
            .tables
            .get(&column.table)
            .is_some_and(|t| t.token_columns.contains(&column.column))
    }

    /// The engine that planned it (a plan runs only there).
    pub(crate) fn engine(&self) -> u64 {
        self.engine
    }

    pub(crate) fn files(&self) -> impl Iterator<Item = &Arc<StoredFile>> {
        self.release
            .keys()
            .filter_map(|t| self.snapshot.tables.get(t))
            .flat_map(|t| t.files.iter())
    }
}
