//! The privacy gate for analysts' questions.
//!
//! A question is SQL text in a restricted aggregate language ([`language`]): one aggregate
//! (count, count distinct, sum, avg) over tables joined by token equalities, filtered by
//! columns compared with constants, grouped by columns. The gate never runs the analyst's
//! text: it parses it into a normal form, checks every column use against the contracts
//! with the shared checker (`blindwatch-policy`), and writes the SQL it runs itself.
//!
//! Every row has a privacy unit, the person it is about (the contract's `privacy_unit`),
//! tracked through every block and join because blocks are flattened, not projected. A
//! released group must have at least k units (`min_group_size`), each unit's contribution
//! is bounded, released counts and sums carry discrete Laplace noise calibrated to those
//! bounds, and each principal and purpose spends from a privacy budget (ε, δ) kept in the
//! catalog and charged before anything runs. How many groups were withheld is not
//! released. A refusal names its rule; an execution failure is one generic refusal that
//! does not depend on the data. Every outcome is an audit entry (digest, principal,
//! purpose, rule or released groups and budget spent).

pub mod cells;
pub mod language;
mod noise;
mod release;
mod settings;
mod sql;

use std::sync::Arc;

use blindwatch_audit::{
    AuditEvent, AuditLog, AuditRecord, Principal as AuditPrincipal, Purpose, ReasonCode,
    Sha256Digest,
};
use blindwatch_engine::Engine;
use blindwatch_policy::{OutputRule, UseRefusal, check_column_uses};
use blindwatch_store::{Budget, Charge};
use futures::StreamExt;

pub use cells::Cell;
pub use language::{LanguageRule, Limits, Refusal};
pub use settings::{GateSettings, PurposeSettings, SettingsError};

use release::{Accumulator, NoiseParams};

/// The smallest group a query may release when `policies/privacy.toml` does not say.
pub const DEFAULT_MIN_GROUP_SIZE: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Language(Refusal),
    #[error(
        "refused (rule column-use): {}",
        .0.iter().map(UseRefusal::to_string).collect::<Vec<_>>().join("; ")
    )]
    ColumnUse(Vec<UseRefusal>),
    #[error("refused (rule query-plan): {0}")]
    Plan(String),
    #[error(
        "refused (rule budget): this answer needs ε = {needed} and δ = {needed_delta:e}, but `{principal}` has spent ε = {spent} of {limit} (δ {spent_delta:e} of {limit_delta:e}) for purpose `{purpose}`; ask the platform operator for more budget, or for another purpose's"
    )]
    Budget {
        principal: String,
        purpose: String,
        needed: f64,
        needed_delta: f64,
        spent: f64,
        spent_delta: f64,
        limit: f64,
        limit_delta: f64,
    },
    #[error(
        "refused (rule execution): the question could not be answered and nothing was released; the budget it needed is spent. If this keeps happening, tell the platform operator (the cause is in the server log, without values)"
    )]
    Execution,
    #[error("the query was not answered because the audit log refused it: {0}")]
    Audit(String),
}

impl QueryError {
    /// The rule code of a refusal, for the audit log and HTTP problems (None for failures
    /// of the platform itself).
    pub fn rule(&self) -> Option<&'static str> {
        match self {
            QueryError::Language(r) => Some(r.rule.code()),
            QueryError::ColumnUse(_) => Some("column-use"),
            QueryError::Plan(_) => Some("query-plan"),
            QueryError::Budget { .. } => Some("budget"),
            QueryError::Execution => Some("execution"),
            QueryError::Settings(_) | QueryError::Audit(_) => None,
        }
    }
}

/// How an answer was protected, shown with it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Protection {
    /// Every released group has at least this many privacy units.
    pub min_group_size: u64,
    /// Whether counts and sums carry noise (a purpose may turn it off in privacy.toml).
    pub noise: bool,
    /// ε and δ this answer spent.
    pub epsilon: f64,
    pub delta: f64,
    /// The noisy unit count a group had to reach to be released.
    pub release_threshold: Option<f64>,
    /// Per result column: the standard deviation of its noise (null for group keys and
    /// without noise). About 95% of released values are within two of it of the truth
    /// before contribution bounds.
    pub standard_deviation: Vec<Option<f64>>,
    /// The budget of this principal and purpose after this answer.
    pub budget: BudgetState,
    /// What the answer does not say.
    pub note: &'static str,
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BudgetState {
    pub epsilon_spent: f64,
    pub epsilon_limit: f64,
    pub delta_spent: f64,
    pub delta_limit: f64,
    pub queries: u64,
}

/// What a question releases.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// Released groups only.
    pub rows: Vec<Vec<Cell>>,
    pub protection: Protection,
}

impl QueryResult {
    pub fn groups_released(&self) -> u64 {
        self.rows.len() as u64
    }
}

const NOTE: &str = "groups with fewer than min_group_size people, or whose noisy count of people fell below the release threshold, are not shown, and how many were withheld is not disclosed; each person's contribution is bounded by the contracts (max_rows, max_groups, bounds), so heavy contributors are counted in part";

/// An answer not yet audited: the outcome and the audit entry that must be appended
/// before it is shown. Holding the audit log only for that append lets a server answer
/// officers while queries run.
pub struct Answer {
    outcome: Result<QueryResult, QueryError>,
    event: AuditEvent,
    principal: AuditPrincipal,
}

impl Answer {
    /// Appends the outcome to the audit log (and checkpoints it); only then is the result
    /// or the refusal returned. If the log refuses, nothing is released.
    pub fn audit(self, audit: &mut AuditLog) -> Result<QueryResult, QueryError> {
        audit
            .append(&AuditRecord::now(self.principal, self.event))
            .and_then(|_| audit.checkpoint().map(|_| ()))
            .map_err(|e| QueryError::Audit(e.to_string()))?;
        self.outcome
    }
}

fn refused_event(
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

/// Checks, charges and answers `sql` for `principal`; the caller appends the audit entry
/// with [`Answer::audit`]. The access policies are the caller's to ask first (see
/// [`audit_refusal`] for their refusals).
pub async fn answer(
    engine: &Engine,
    sql: &str,
    purpose: &Purpose,
    settings: &GateSettings,
    principal: &AuditPrincipal,
) -> Result<Answer, QueryError> {
    let outcome = answer_inner(engine, sql, purpose, settings, principal).await;
    let event = match &outcome {
        Ok((result, withheld)) => AuditEvent::QueryRun {
            query_sha256: Sha256Digest::of(sql.as_bytes()),
            principal: principal.clone(),
            purpose: purpose.clone(),
            groups_released: result.groups_released(),
            groups_withheld: *withheld,
            epsilon_micro: to_micro(result.protection.epsilon),
            delta_femto: to_femto(result.protection.delta),
        },
        Err(e) => match e.rule() {
            Some(rule) => refused_event(sql, purpose, principal, rule)?,
            None => refused_event(sql, purpose, principal, "platform-failure")?,
        },
    };
    Ok(Answer {
        outcome: outcome.map(|(r, _)| r),
        event,
        principal: principal.clone(),
    })
}

/// [`answer`], then its audit entry.
pub async fn run_audited(
    engine: &Engine,
    sql: &str,
    purpose: &Purpose,
    settings: &GateSettings,
    principal: &AuditPrincipal,
    audit: &mut AuditLog,
) -> Result<QueryResult, QueryError> {
    answer(engine, sql, purpose, settings, principal)
        .await?
        .audit(audit)
}

/// Audits a query refused before the gate saw it (by the access policies, say).
pub fn audit_refusal(
    sql: &str,
    purpose: &Purpose,
    principal: &AuditPrincipal,
    rule: &str,
    audit: &mut AuditLog,
) -> Result<(), QueryError> {
    let event = refused_event(sql, purpose, principal, rule)?;
    audit
        .append(&AuditRecord::now(principal.clone(), event))
        .and_then(|_| audit.checkpoint().map(|_| ()))
        .map_err(|e| QueryError::Audit(e.to_string()))
}

fn to_micro(x: f64) -> u64 {
    (x * 1e6).round().max(0.0) as u64
}

fn to_femto(x: f64) -> u64 {
    (x * 1e15).round().clamp(0.0, 9e18) as u64
}

/// The checked form of a question: its normal form and the SQL the gate runs.
struct Checked {
    analysis: language::Analysis,
    plan: sql::GatePlan,
}

/// Parses and checks a question for `purpose` without running it or spending budget.
async fn check(
    engine: &Engine,
    sql_text: &str,
    purpose: &Purpose,
    settings: &GateSettings,
) -> Result<Checked, QueryError> {
    let analysis = language::parse(sql_text, engine.contracts(), &settings.limits)
        .map_err(QueryError::Language)?;
    if !sql::connected(&analysis) {
        return Err(QueryError::Language(Refusal {
            rule: LanguageRule::Join,
            message: "every table must be joined to the others through token equalities".into(),
        }));
    }
    let noise = settings.purpose(purpose.as_str()).noise;
    let plan = sql::plan(&analysis, engine.contracts(), noise)
        .map_err(|e| QueryError::Plan(e.to_string()))?;
    // The one column-use checker, on the question as asked.
    let checked = engine
        .plan(&plan.check)
        .await
        .map_err(|e| QueryError::Plan(e.to_string()))?;
    let refusals = check_column_uses(
        checked.analysis(),
        engine.contracts(),
        purpose,
        &OutputRule { subject: None },
    );
    if !refusals.is_empty() {
        return Err(QueryError::ColumnUse(refusals));
    }
    Ok(Checked { analysis, plan })
}

async fn answer_inner(
    engine: &Engine,
    sql_text: &str,
    purpose: &Purpose,
    settings: &GateSettings,
    principal: &AuditPrincipal,
) -> Result<(QueryResult, u64), QueryError> {
    let checked = check(engine, sql_text, purpose, settings).await?;
    let for_purpose = settings.purpose(purpose.as_str());
    let noise = for_purpose.noise.then_some(NoiseParams {
        epsilon: for_purpose.epsilon_per_query,
        delta: for_purpose.delta_per_query,
    });

    // Spend first: an answer is never released unpaid, and a failure is paid for too, so
    // failures cannot be probed for free. Without noise nothing is spent.
    let ledger_failed = |e: blindwatch_store::CatalogError| {
        tracing::error!(error = %e, "the privacy budget ledger failed");
        QueryError::Execution
    };
    let spent = if noise.is_some() {
        let cost = Budget {
            epsilon_micro: to_micro(for_purpose.epsilon_per_query),
            delta_femto: to_femto(for_purpose.delta_per_query),
        };
        let limit = Budget {
            epsilon_micro: to_micro(for_purpose.budget_epsilon),
            delta_femto: to_femto(for_purpose.budget_delta),
        };
        match engine
            .catalog()
            .charge_budget(principal.as_str(), purpose.as_str(), cost, limit)
            .await
            .map_err(ledger_failed)?
        {
            Charge::Charged(s) => s,
            Charge::Exhausted(s) => {
                return Err(QueryError::Budget {
                    principal: principal.as_str().to_owned(),
                    purpose: purpose.as_str().to_owned(),
                    needed: for_purpose.epsilon_per_query,
                    needed_delta: for_purpose.delta_per_query,
                    spent: s.budget.epsilon_micro as f64 / 1e6,
                    spent_delta: s.budget.delta_femto as f64 / 1e15,
                    limit: for_purpose.budget_epsilon,
                    limit_delta: for_purpose.budget_delta,
                });
            }
        }
    } else {
        engine
            .catalog()
            .budget_spent(principal.as_str(), purpose.as_str())
            .await
            .map_err(ledger_failed)?
    };

    let protection = release::Protection {
        min_group_size: settings.min_group_size,
        noise,
    };
    let released = execute(engine, &checked, protection).await?;
    let withheld = released.withheld;
    let released = released.released;
    let mut standard_deviation = Vec::new();
    for (_, o) in &checked.analysis.outputs {
        standard_deviation.push(match o {
            language::Output::Key(_) => None,
            language::Output::Aggregate(i) => released.deviations.get(*i).copied().flatten(),
        });
    }
    let result = QueryResult {
        columns: checked
            .analysis
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .collect(),
        rows: released.rows,
        protection: Protection {
            min_group_size: settings.min_group_size,
            noise: noise.is_some(),
            epsilon: noise.map_or(0.0, |n| n.epsilon),
            delta: noise.map_or(0.0, |n| n.delta),
            release_threshold: released.threshold,
            standard_deviation,
            budget: BudgetState {
                epsilon_spent: spent.budget.epsilon_micro as f64 / 1e6,
                epsilon_limit: for_purpose.budget_epsilon,
                delta_spent: spent.budget.delta_femto as f64 / 1e15,
                delta_limit: for_purpose.budget_delta,
                queries: spent.queries,
            },
            note: NOTE,
        },
    };
    tracing::info!(
        groups_released = result.rows.len(),
        k = settings.min_group_size,
        noise = noise.is_some(),
        "gated query answered"
    );
    Ok((result, withheld))
}

struct Executed {
    released: release::Released,
    withheld: u64,
}

/// Runs the partials and units forms and releases what passes. Any failure is the one
/// generic refusal; its cause goes to the log by kind (engine errors carry no values).
async fn execute(
    engine: &Engine,
    checked: &Checked,
    protection: release::Protection,
) -> Result<Executed, QueryError> {
    let failed = |what: &'static str| {
        move |e: &dyn std::fmt::Display| {
            tracing::warn!(stage = what, error = %e, "a gated query failed while running");
            QueryError::Execution
        }
    };
    let keys = checked.analysis.keys.len();
    let mut rng = noise::rng();
    let plan = &checked.plan;
    let mut acc = Accumulator::new(plan, protection.noise.is_some());
    let partials = engine
        .plan(&plan.partials)
        .await
        .map_err(|e| failed("plan partials")(&e))?;
    let mut stream = engine
        .execute_stream(&partials)
        .await
        .map_err(|e| failed("run partials")(&e))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| failed("run partials")(&e))?;
        acc.add(&batch, keys, &mut rng)
            .map_err(|e| failed("read partials")(&e))?;
    }
    acc.flush(&mut rng);
    if let Some(units) = &plan.units {
        let units = engine
            .plan(units)
            .await
            .map_err(|e| failed("plan units")(&e))?;
        for batch in engine
            .execute(&units)
            .await
            .map_err(|e| failed("run units")(&e))?
        {
            acc.add_units(&batch, keys)
                .map_err(|e| failed("read units")(&e))?;
        }
    }
    let groups = acc.len() as u64;
    let released = release::release(acc, &checked.analysis, protection, &mut rng);
    Ok(Executed {
        withheld: groups.saturating_sub(released.rows.len() as u64),
        released,
    })
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

/// Shared settings for servers: loaded once, read by every request.
pub type SharedSettings = Arc<GateSettings>;
