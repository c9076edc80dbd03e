//! The alert store (SQLite or PostgreSQL through sqlx `Any`): alerts, model runs, history.

use std::collections::HashMap;
use std::path::Path;

use blindwatch_audit::{AlertId, StationId, Tier};
use blindwatch_store::database::{Database, DatabaseError, DatabaseTarget, Migrations};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::migrate::Migrator;

use crate::evidence::Evidence;
use crate::lifecycle;
use crate::pseudonym::{Pseudonym, SubjectKey};
use crate::{parse_tier, tier_name};

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error(
        "alert store database error: {0}; check that the data directory is writable and not damaged"
    )]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("the alert store holds a damaged record ({0}); restore alerts.sqlite from a backup")]
    Damaged(&'static str),
    #[error("the change was not recorded: {0}")]
    Aborted(String),
    #[error("there is no alert {0}; check the id against the alert list")]
    UnknownAlert(AlertId),
    #[error(
        "alert {alert} is closed ({outcome}), so it cannot be {action}; work on the subject's open alerts instead (a model run opens a new alert if the risk returns)"
    )]
    AlertClosed {
        alert: AlertId,
        outcome: String,
        action: &'static str,
    },
    #[error("alert {alert} was already acknowledged by {by}; nothing to do")]
    AlreadyAcknowledged { alert: AlertId, by: String },
    #[error("alert {alert} is already assigned to {assignee}; name another officer to reassign it")]
    AlreadyAssigned { alert: AlertId, assignee: String },
    #[error("the {field} is empty; write it, or leave it out where it is optional")]
    EmptyText { field: &'static str },
    #[error("the {field} has {chars} characters, more than the {max} allowed; shorten it")]
    TextTooLong {
        field: &'static str,
        chars: usize,
        max: usize,
    },
    #[error(
        "the {field} holds a number of 11 or more digits (in any script or numerals, separators between the digits included), which looks like a phone or ID-card number; alerts hold pseudonyms only: refer to the subject by its pseudonym and leave identifiers out"
    )]
    TextLooksLikeIdentifier { field: &'static str },
    #[error(
        "a silence needs at least one matcher (model, station, tier, category or subject); a silence of everything would mute every notification"
    )]
    SilenceWithoutMatcher,
    #[error("the silence's {0} matcher is empty; give a value or leave the matcher out")]
    EmptyMatcher(&'static str),
    #[error("the silence's {matcher} matcher is {rule}")]
    BadMatcher {
        matcher: &'static str,
        rule: &'static str,
    },
    #[error(
        "the silence ends ({ends_at}) at or before it starts ({starts_at}); give an end after the start"
    )]
    SilenceEndsBeforeStart { starts_at: String, ends_at: String },
    #[error("there is no silence {0}; list the silences to find its id")]
    UnknownSilence(blindwatch_audit::SilenceId),
    #[error("silence {id} already ended at {at}; there is nothing to expire")]
    SilenceEnded {
        id: blindwatch_audit::SilenceId,
        at: String,
    },
    #[error(
        "pseudonym {0} belongs to more than one subject (a rare pseudonym collision); open the subject from one of its alerts instead"
    )]
    AmbiguousPseudonym(Pseudonym),
    #[error("the page cursor is not one this listing gave out; list again from the first page")]
    InvalidCursor,
}

impl AlertStoreError {
    /// A value-free code for the rule a refused request broke (for the audit log and
    /// problem documents); None for failures of the store itself.
    pub fn rule(&self) -> Option<&'static str> {
        Some(match self {
            AlertStoreError::Db(_)
            | AlertStoreError::Database(_)
            | AlertStoreError::Damaged(_)
            | AlertStoreError::Aborted(_) => return None,
            AlertStoreError::UnknownAlert(_) => "unknown-alert",
            AlertStoreError::AlertClosed { .. } => "alert-closed",
            AlertStoreError::AlreadyAcknowledged { .. } => "already-acknowledged",
            AlertStoreError::AlreadyAssigned { .. } => "already-assigned",
            AlertStoreError::EmptyText { .. } => "text-empty",
            AlertStoreError::TextTooLong { .. } => "text-too-long",
            AlertStoreError::TextLooksLikeIdentifier { .. } => "text-identifier",
            AlertStoreError::SilenceWithoutMatcher => "no-matcher",
            AlertStoreError::EmptyMatcher(_) | AlertStoreError::BadMatcher { .. } => "bad-matcher",
            AlertStoreError::SilenceEndsBeforeStart { .. } => "silence-times",
            AlertStoreError::UnknownSilence(_) => "unknown-silence",
            AlertStoreError::SilenceEnded { .. } => "silence-ended",
            AlertStoreError::AmbiguousPseudonym(_) => "ambiguous-pseudonym",
            AlertStoreError::InvalidCursor => "invalid-cursor",
        })
    }
}

/// What a model found about one subject in one run.
#[derive(Debug, Clone)]
pub struct Finding {
    pub subject: SubjectKey,
    pub pseudonym: Pseudonym,
    pub station: StationId,
    pub tier: Tier,
    pub evidence: Evidence,
}

/// The model run the findings come from.
#[derive(Debug, Clone)]
pub struct RunInput<'a> {
    pub model: &'a str,
    pub version: u32,
    pub category: &'a str,
    pub subject_kind: &'a str,
    /// Runs a lower tier (or no finding) must hold before the alert follows it (≥ 1). Also
    /// the runs a subject must be absent before an officer's close stops holding back new
    /// alerts for it.
    pub keep_for: u32,
    /// The time the run evaluates as of (first/last seen, the time of its changes).
    pub as_of: DateTime<Utc>,
}

/// How one alert changed in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A new alert (also when reopened from an officer-closed one: see
    /// [`AlertChange::reopened_from`]).
    Opened,
    Raised,
    Lowered,
    Resolved,
}

/// One change, for the audit log and the caller's report.
#[derive(Debug, Clone)]
pub struct AlertChange {
    pub alert: AlertId,
    pub change: Change,
    pub from: Option<Tier>,
    pub to: Tier,
    pub station: StationId,
    /// For [`Change::Opened`]: the officer-closed alert of the same subject and model whose
    /// tier the finding rose above.
    pub reopened_from: Option<AlertId>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub run_id: i64,
    pub subjects: u64,
    pub changes: Vec<AlertChange>,
    /// Open alerts the run confirmed at their tier (evidence refreshed).
    pub unchanged: u64,
    /// Findings that opened nothing because an officer closed the subject's alert and the
    /// finding is at the same or a lower tier.
    pub suppressed: u64,
    /// Officer-closed alerts whose subject was absent for `keep_for` runs: their subject may
    /// alert again.
    pub suppressions_lifted: u64,
}

impl RunOutcome {
    pub fn count(&self, c: Change) -> u64 {
        self.changes.iter().filter(|x| x.change == c).count() as u64
    }
}

/// The stored status. Readers usually want the workflow [`State`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Closed,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Closed => "closed",
        }
    }
}

/// The workflow state officers see, derived from the stored status and acknowledgement:
/// `open` (nobody has acknowledged it), `acknowledged`, `closed` (by a run or an officer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Open,
    Acknowledged,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Closed => "closed",
        }
    }
}

/// An alert as officers see it: no token, no identifier.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    pub id: String,
    pub model: String,
    pub model_version: u32,
    pub category: String,
    pub tier: Tier,
    pub status: Status,
    /// Derived from `status` and `acknowledged_at`.
    pub state: State,
    pub subject_kind: String,
    pub subject: Pseudonym,
    pub station: String,
    pub evidence: Evidence,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// `resolved` (a model run: the condition ended), or an officer's close: `handled`,
    /// `false_positive`, `duplicate` (see [`crate::Outcome`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The officer who closed it (None when a run resolved it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// The officer-closed alert this one reopened (the subject's tier rose above it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reopened_from: Option<String>,
    /// Closed by an officer and still holding back new alerts for the subject under this
    /// model (until the subject is absent `keep_for` runs or its tier rises above this one).
    pub suppressing: bool,
}

/// Which alerts to list (all when empty). For the server's scoped, paginated listing see
/// [`crate::AlertQuery`].
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub station: Option<String>,
    pub tier: Option<Tier>,
    pub model: Option<String>,
    pub status: Option<Status>,
}

/// What one history row (one event) records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A run opened the alert.
    Opened,
    /// A run opened the alert for a subject whose officer-closed alert it rose above.
    Reopened,
    Raised,
    Lowered,
    /// A run closed the alert: the condition ended.
    Resolved,
    /// On an officer-closed alert: it no longer holds back new alerts for its subject.
    SuppressionLifted,
    Acknowledged,
    Assigned,
    Commented,
    /// An officer closed the alert.
    Closed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Reopened => "reopened",
            EventKind::Raised => "raised",
            EventKind::Lowered => "lowered",
            EventKind::Resolved => "resolved",
            EventKind::SuppressionLifted => "suppression_lifted",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Assigned => "assigned",
            EventKind::Commented => "commented",
            EventKind::Closed => "closed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Opened,
            EventKind::Reopened,
            EventKind::Raised,
            EventKind::Lowered,
            EventKind::Resolved,
            EventKind::SuppressionLifted,
            EventKind::Acknowledged,
            EventKind::Assigned,
            EventKind::Commented,
            EventKind::Closed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Acknowledge, assign, comment, close: done by an officer, never notified.
    pub fn is_officer_action(self) -> bool {
        matches!(
            self,
            EventKind::Acknowledged
                | EventKind::Assigned
                | EventKind::Commented
                | EventKind::Closed
        )
    }

    /// A change of an alert by a model run that may notify: opened, reopened, raised,
    /// lowered, resolved. (A lifted suppression is bookkeeping and never notifies.)
    pub fn is_run_change(self) -> bool {
        matches!(
            self,
            EventKind::Opened
                | EventKind::Reopened
                | EventKind::Raised
                | EventKind::Lowered
                | EventKind::Resolved
        )
    }

    fn of(c: Change) -> EventKind {
        match c {
            Change::Opened => EventKind::Opened,
            Change::Raised => EventKind::Raised,
            Change::Lowered => EventKind::Lowered,
            Change::Resolved => EventKind::Resolved,
        }
    }
}

/// One row of an alert's history. `id` is also the event id (increasing over the store).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub at: String,
    pub change: EventKind,
    /// The tier before the change (runs' opened rows have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Tier>,
    /// The alert's tier after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Tier>,
    /// The officer's principal; None for model runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// A short description; a comment's text; a close note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
}

#[derive(Clone)]
pub struct AlertStore {
    pub(crate) db: Database,
}

pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The columns [`alert_from_row`] reads.
pub(crate) const ALERT_COLUMNS: &str = "id, model, model_version, category, tier, status, subject_kind, pseudonym,
    station, evidence, first_seen, last_seen, closed_at, outcome, acknowledged_by, acknowledged_at, assignee,
    closed_by, reopened_from, suppressing";

/// SQL ordering rank of a tier column (red 4 … blue 1), as [`tier_rank`].
pub(crate) const TIER_RANK_SQL: &str =
    "CASE tier WHEN 'red' THEN 4 WHEN 'orange' THEN 3 WHEN 'yellow' THEN 2 ELSE 1 END";

struct OpenAlert {
    id: String,
    tier: Tier,
    station: String,
    below_runs: u32,
}

struct SuppressingAlert {
    id: String,
    tier: Tier,
    station: String,
    outcome: String,
    absent_runs: u32,
}

impl OpenAlert {
    fn state(&self) -> lifecycle::Open {
        lifecycle::Open {
            tier: self.tier,
            below_runs: self.below_runs,
        }
    }
}

impl SuppressingAlert {
    fn state(&self) -> lifecycle::OfficerClosed {
        lifecycle::OfficerClosed {
            tier: self.tier,
            absent_runs: self.absent_runs,
        }
    }
}

/// A history row to write.
pub(crate) struct NewHistory<'a> {
    pub alert: &'a str,
    pub run_id: Option<i64>,
    pub at: &'a str,
    pub change: EventKind,
    pub from: Option<Tier>,
    pub to: Tier,
    pub station: &'a str,
    pub actor: Option<&'a str>,
    pub detail: Option<&'a str>,
}

fn alert_id(id: &str) -> Result<AlertId, AlertStoreError> {
    AlertId::new(id).map_err(|_| AlertStoreError::Damaged("an alert id"))
}

fn station_id(s: &str) -> Result<StationId, AlertStoreError> {
    StationId::new(s).map_err(|_| AlertStoreError::Damaged("an alert's station"))
}

/// A stored run count: never negative; one that is means the store was changed outside it.
fn count(n: i64, what: &'static str) -> Result<u32, AlertStoreError> {
    n.try_into().map_err(|_| AlertStoreError::Damaged(what))
}

impl AlertStore {
    /// Opens (creating if needed) the alert store in the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<AlertStore, AlertStoreError> {
        AlertStore::connect(&DatabaseTarget::SqliteFile(path.to_path_buf())).await
    }

    /// Opens (creating if needed) the alert store: a SQLite file or a PostgreSQL schema.
    pub async fn connect(target: &DatabaseTarget) -> Result<AlertStore, AlertStoreError> {
        static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
        let migrations = Migrations {
            store: "alert",
            sqlite: &SQLITE,
            postgres: &POSTGRES,
        };
        Ok(AlertStore {
            db: Database::connect(target, &migrations).await?,
        })
    }

    /// Closes the database (not an alert: see [`AlertStore::close_alert`]).
    pub async fn close(self) {
        self.db.close().await;
    }

    /// A write transaction that takes the store's write lock first, so a run and an
    /// officer's action (or two processes) queue instead of failing on a lock upgrade.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, AlertStoreError> {
        Ok(self.db.begin_write().await?)
    }

    /// Applies one model run's findings in one transaction. `before_commit` sees the outcome
    /// before it is committed (the caller writes the audit records there); if it fails,
    /// nothing of the run is stored.
    ///
    /// A subject whose alert an officer closed opens no new alert while the run finds it at
    /// the closed alert's tier or lower ([`RunOutcome::suppressed`]); after `keep_for`
    /// consecutive runs without it the suppression is lifted; a finding above the closed
    /// alert's tier opens a new alert reopened from it.
    pub async fn apply_run<E: std::fmt::Display>(
        &self,
        run: &RunInput<'_>,
        findings: Vec<Finding>,
        before_commit: impl FnOnce(&RunOutcome) -> Result<(), E>,
    ) -> Result<RunOutcome, AlertStoreError> {
        let keep_for = run.keep_for.max(1);
        let now = ts(run.as_of);
        let started = ts(Utc::now());
        let mut tx = self.begin_write().await?;

        let mut open: HashMap<String, OpenAlert> = HashMap::new();
        let rows = sqlx::query(
            "SELECT id, subject_key, tier, station, below_runs FROM alerts WHERE model = $1 AND status = 'open'",
        )
        .bind(run.model)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            let tier = parse_tier(r.try_get::<&str, _>("tier")?)
                .ok_or(AlertStoreError::Damaged("an alert's tier"))?;
            open.insert(
                r.try_get("subject_key")?,
                OpenAlert {
                    id: r.try_get("id")?,
                    tier,
                    station: r.try_get("station")?,
                    below_runs: count(r.try_get("below_runs")?, "an alert's run count")?,
                },
            );
        }
        let mut suppressing: HashMap<String, SuppressingAlert> = HashMap::new();
        let rows = sqlx::query(
            "SELECT id, subject_key, tier, station, outcome, absent_runs FROM alerts WHERE model = $1 AND suppressing = 1",
        )
        .bind(run.model)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            let tier = parse_tier(r.try_get::<&str, _>("tier")?)
                .ok_or(AlertStoreError::Damaged("an alert's tier"))?;
            suppressing.insert(
                r.try_get("subject_key")?,
                SuppressingAlert {
                    id: r.try_get("id")?,
                    tier,
                    station: r.try_get("station")?,
                    // An officer's close always records its outcome.
                    outcome: r
                        .try_get::<Option<String>, _>("outcome")?
                        .ok_or(AlertStoreError::Damaged("a closed alert's outcome"))?,
                    absent_runs: count(r.try_get("absent_runs")?, "an alert's run count")?,
                },
            );
        }

        let run_id: i64 = sqlx::query(
            "INSERT INTO runs (model, model_version, as_of, started_at, subjects, opened, raised, lowered, resolved)
             VALUES ($1, $2, $3, $4, $5, 0, 0, 0, 0) RETURNING id",
        )
        .bind(run.model)
        .bind(i64::from(run.version))
        .bind(&now)
        .bind(&started)
        .bind(findings.len() as i64)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;

        let mut outcome = RunOutcome {
            run_id,
            subjects: findings.len() as u64,
            ..RunOutcome::default()
        };

        for f in findings {
            let evidence = serde_json::to_string(&f.evidence)
                .map_err(|_| AlertStoreError::Damaged("evidence"))?;
            let key = f.subject.as_str();
            if let Some(a) = open.remove(key) {
                let lifecycle::Update {
                    tier,
                    below_runs: below,
                    change,
                } = lifecycle::found_open(a.state(), f.tier, keep_for);
                sqlx::query(
                    "UPDATE alerts SET tier = $1, below_runs = $2, evidence = $3, last_seen = $4, station = $5,
                                       model_version = $6 WHERE id = $7",
                )
                .bind(tier_name(tier))
                .bind(i64::from(below))
                .bind(&evidence)
                .bind(&now)
                .bind(f.station.as_str())
                .bind(i64::from(run.version))
                .bind(&a.id)
                .execute(&mut *tx)
                .await?;
                match change {
                    Some(c) => {
                        write_history(
                            &mut tx,
                            &NewHistory {
                                alert: &a.id,
                                run_id: Some(run_id),
                                at: &now,
                                change: EventKind::of(c),
                                from: Some(a.tier),
                                to: tier,
                                station: f.station.as_str(),
                                actor: None,
                                detail: None,
                            },
                        )
                        .await?;
                        outcome.changes.push(AlertChange {
                            alert: alert_id(&a.id)?,
                            change: c,
                            from: Some(a.tier),
                            to: tier,
                            station: f.station.clone(),
                            reopened_from: None,
                        });
                    }
                    None => outcome.unchanged += 1,
                }
                continue;
            }

            let closed = suppressing.remove(key);
            let reopened_from = match (
                lifecycle::found_without_open(closed.as_ref().map(SuppressingAlert::state), f.tier),
                closed,
            ) {
                (lifecycle::NoOpenAlert::Suppressed, Some(s)) => {
                    // Still the condition the officer closed: remember it was seen.
                    sqlx::query("UPDATE alerts SET absent_runs = 0 WHERE id = $1")
                        .bind(&s.id)
                        .execute(&mut *tx)
                        .await?;
                    outcome.suppressed += 1;
                    continue;
                }
                (lifecycle::NoOpenAlert::Reopen, Some(s)) => Some(s),
                (_, _) => None,
            };

            let id =
                insert_alert(&mut tx, run, &f, &evidence, &now, reopened_from.as_ref()).await?;
            if let Some(s) = &reopened_from {
                sqlx::query("UPDATE alerts SET suppressing = 0, absent_runs = 0 WHERE id = $1")
                    .bind(&s.id)
                    .execute(&mut *tx)
                    .await?;
                let lifted = format!(
                    "a run found the subject at {} (above {}): reopened as {id}",
                    tier_name(f.tier),
                    tier_name(s.tier)
                );
                write_history(
                    &mut tx,
                    &NewHistory {
                        alert: &s.id,
                        run_id: Some(run_id),
                        at: &now,
                        change: EventKind::SuppressionLifted,
                        from: Some(s.tier),
                        to: s.tier,
                        station: &s.station,
                        actor: None,
                        detail: Some(&lifted),
                    },
                )
                .await?;
                let reopened = format!(
                    "reopened from {} (closed as {} at {}): the subject rose to {}",
                    s.id,
                    s.outcome,
                    tier_name(s.tier),
                    tier_name(f.tier)
                );
                write_history(
                    &mut tx,
                    &NewHistory {
                        alert: &id,
                        run_id: Some(run_id),
                        at: &now,
                        change: EventKind::Reopened,
                        from: Some(s.tier),
                        to: f.tier,
                        station: f.station.as_str(),
                        actor: None,
                        detail: Some(&reopened),
                    },
                )
                .await?;
            } else {
                write_history(
                    &mut tx,
                    &NewHistory {
                        alert: &id,
                        run_id: Some(run_id),
                        at: &now,
                        change: EventKind::Opened,
                        from: None,
                        to: f.tier,
                        station: f.station.as_str(),
                        actor: None,
                        detail: None,
                    },
                )
                .await?;
            }
            outcome.changes.push(AlertChange {
                alert: alert_id(&id)?,
                change: Change::Opened,
                from: reopened_from.as_ref().map(|s| s.tier),
                to: f.tier,
                station: f.station.clone(),
                reopened_from: reopened_from
                    .as_ref()
                    .map(|s| alert_id(&s.id))
                    .transpose()?,
            });
        }

        // Open alerts the run did not find: the condition no longer holds.
        let mut rest: Vec<OpenAlert> = open.into_values().collect();
        rest.sort_by(|a, b| a.id.cmp(&b.id));
        for a in rest {
            if let lifecycle::Absent::Hold { below_runs } =
                lifecycle::open_absent(a.state(), keep_for)
            {
                sqlx::query("UPDATE alerts SET below_runs = $1 WHERE id = $2")
                    .bind(i64::from(below_runs))
                    .bind(&a.id)
                    .execute(&mut *tx)
                    .await?;
                outcome.unchanged += 1;
            } else {
                sqlx::query(
                    "UPDATE alerts SET status = 'closed', closed_at = $1, outcome = 'resolved', below_runs = 0 WHERE id = $2",
                )
                .bind(&now)
                .bind(&a.id)
                .execute(&mut *tx)
                .await?;
                write_history(
                    &mut tx,
                    &NewHistory {
                        alert: &a.id,
                        run_id: Some(run_id),
                        at: &now,
                        change: EventKind::Resolved,
                        from: Some(a.tier),
                        to: a.tier,
                        station: &a.station,
                        actor: None,
                        detail: None,
                    },
                )
                .await?;
                outcome.changes.push(AlertChange {
                    alert: alert_id(&a.id)?,
                    change: Change::Resolved,
                    from: Some(a.tier),
                    to: a.tier,
                    station: station_id(&a.station)?,
                    reopened_from: None,
                });
            }
        }

        // Officer-closed subjects the run did not find: after keep_for runs the condition
        // has ended and the subject may alert again.
        let mut rest: Vec<SuppressingAlert> = suppressing.into_values().collect();
        rest.sort_by(|a, b| a.id.cmp(&b.id));
        for s in rest {
            let absent_runs = match lifecycle::closed_absent(s.state(), keep_for) {
                lifecycle::Lift::Wait { absent_runs } => {
                    sqlx::query("UPDATE alerts SET absent_runs = $1 WHERE id = $2")
                        .bind(i64::from(absent_runs))
                        .bind(&s.id)
                        .execute(&mut *tx)
                        .await?;
                    continue;
                }
                lifecycle::Lift::Lift { absent_runs } => absent_runs,
            };
            sqlx::query("UPDATE alerts SET suppressing = 0, absent_runs = 0 WHERE id = $1")
                .bind(&s.id)
                .execute(&mut *tx)
                .await?;
            let detail = format!(
                "the subject was absent from {absent_runs} consecutive runs: a new finding opens a new alert"
            );
            write_history(
                &mut tx,
                &NewHistory {
                    alert: &s.id,
                    run_id: Some(run_id),
                    at: &now,
                    change: EventKind::SuppressionLifted,
                    from: Some(s.tier),
                    to: s.tier,
                    station: &s.station,
                    actor: None,
                    detail: Some(&detail),
                },
            )
            .await?;
            outcome.suppressions_lifted += 1;
        }

        sqlx::query(
            "UPDATE runs SET opened = $1, raised = $2, lowered = $3, resolved = $4, suppressed = $5 WHERE id = $6",
        )
        .bind(outcome.count(Change::Opened) as i64)
        .bind(outcome.count(Change::Raised) as i64)
        .bind(outcome.count(Change::Lowered) as i64)
        .bind(outcome.count(Change::Resolved) as i64)
        .bind(outcome.suppressed as i64)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;

        before_commit(&outcome).map_err(|e| AlertStoreError::Aborted(e.to_string()))?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Alerts matching `filter`, highest tier first, then most recently seen.
    pub async fn list(&self, filter: &AlertFilter) -> Result<Vec<Alert>, AlertStoreError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
        let mut binds: Vec<String> = Vec::new();
        let conditions = [
            ("station", filter.station.clone()),
            ("tier", filter.tier.map(|t| tier_name(t).to_owned())),
            ("model", filter.model.clone()),
            ("status", filter.status.map(|s| s.as_str().to_owned())),
        ];
        for (column, value) in conditions {
            if let Some(value) = value {
                binds.push(value);
                sql.push_str(&format!(" AND {column} = ${}", binds.len()));
            }
        }
        sql.push_str(&format!(
            " ORDER BY {TIER_RANK_SQL} DESC, last_seen DESC, seq"
        ));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(self.db.pool()).await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// One alert.
    pub async fn get(&self, alert: &AlertId) -> Result<Alert, AlertStoreError> {
        let mut conn = self.db.pool().acquire().await?;
        fetch_alert(&mut conn, alert.as_str())
            .await?
            .ok_or_else(|| AlertStoreError::UnknownAlert(alert.clone()))
    }

    /// The identifier kind and subject key behind an alert: for the reveal workflow only,
    /// which matches the police's own tokens against it. Never shown to anyone.
    pub async fn subject_key_of(
        &self,
        alert: &AlertId,
    ) -> Result<(String, SubjectKey), AlertStoreError> {
        let row = sqlx::query("SELECT subject_kind, subject_key FROM alerts WHERE id = $1")
            .bind(alert.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| AlertStoreError::UnknownAlert(alert.clone()))?;
        Ok((
            row.try_get("subject_kind")?,
            SubjectKey::from_stored(row.try_get("subject_key")?),
        ))
    }

    /// One alert's history (run changes, officer actions, comments), oldest first.
    pub async fn history(&self, alert: &AlertId) -> Result<Vec<HistoryEntry>, AlertStoreError> {
        let exists = sqlx::query("SELECT 1 FROM alerts WHERE id = $1")
            .bind(alert.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        if exists.is_none() {
            return Err(AlertStoreError::UnknownAlert(alert.clone()));
        }
        let rows = sqlx::query(&format!(
            "SELECT {HISTORY_COLUMNS} FROM alert_history WHERE alert_id = $1 ORDER BY id"
        ))
        .bind(alert.as_str())
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(history_from_row).collect()
    }
}

async fn insert_alert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    run: &RunInput<'_>,
    f: &Finding,
    evidence: &str,
    now: &str,
    reopened_from: Option<&SuppressingAlert>,
) -> Result<String, AlertStoreError> {
    let seq: i64 = sqlx::query(
        "INSERT INTO alerts (id, model, model_version, category, subject_kind, subject_key, pseudonym,
                             station, tier, status, evidence, first_seen, last_seen, reopened_from)
         VALUES ('', $1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $11, $12) RETURNING seq",
    )
    .bind(run.model)
    .bind(i64::from(run.version))
    .bind(run.category)
    .bind(run.subject_kind)
    .bind(f.subject.as_str())
    .bind(f.pseudonym.as_str())
    .bind(f.station.as_str())
    .bind(tier_name(f.tier))
    .bind(evidence)
    .bind(now)
    .bind(now)
    .bind(reopened_from.map(|s| s.id.as_str()))
    .fetch_one(&mut **tx)
    .await?
    .try_get("seq")?;
    let id = format!("A-{seq:07}");
    sqlx::query("UPDATE alerts SET id = $1 WHERE seq = $2")
        .bind(&id)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(id)
}

/// Writes one history row; returns its id (the event id).
pub(crate) async fn write_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    h: &NewHistory<'_>,
) -> Result<i64, AlertStoreError> {
    let id: i64 = sqlx::query(
        "INSERT INTO alert_history (alert_id, run_id, at, change, from_tier, to_tier, station, actor, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(h.alert)
    .bind(h.run_id)
    .bind(h.at)
    .bind(h.change.as_str())
    .bind(h.from.map(tier_name))
    .bind(tier_name(h.to))
    .bind(h.station)
    .bind(h.actor)
    .bind(h.detail)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    Ok(id)
}

pub(crate) async fn fetch_alert(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<Alert>, AlertStoreError> {
    let row = sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(alert_from_row).transpose()
}

/// The columns [`history_from_row`] reads.
pub(crate) const HISTORY_COLUMNS: &str =
    "id, run_id, at, change, from_tier, to_tier, actor, detail";

pub(crate) fn history_from_row(r: &sqlx::any::AnyRow) -> Result<HistoryEntry, AlertStoreError> {
    let tier = |c: &str| -> Result<Option<Tier>, AlertStoreError> {
        match r.try_get::<Option<&str>, _>(c)? {
            None => Ok(None),
            Some(t) => parse_tier(t)
                .map(Some)
                .ok_or(AlertStoreError::Damaged("a history row's tier")),
        }
    };
    Ok(HistoryEntry {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        change: EventKind::parse(r.try_get::<&str, _>("change")?)
            .ok_or(AlertStoreError::Damaged("a history row's change"))?,
        from: tier("from_tier")?,
        to: tier("to_tier")?,
        actor: r.try_get("actor")?,
        detail: r.try_get("detail")?,
        run_id: r.try_get("run_id")?,
    })
}

pub(crate) fn alert_from_row(r: &sqlx::any::AnyRow) -> Result<Alert, AlertStoreError> {
    let tier = parse_tier(r.try_get::<&str, _>("tier")?)
        .ok_or(AlertStoreError::Damaged("an alert's tier"))?;
    let status = match r.try_get::<&str, _>("status")? {
        "open" => Status::Open,
        "closed" => Status::Closed,
        _ => return Err(AlertStoreError::Damaged("an alert's status")),
    };
    let evidence: Evidence = serde_json::from_str(r.try_get::<&str, _>("evidence")?)
        .map_err(|_| AlertStoreError::Damaged("an alert's evidence"))?;
    let acknowledged_at: Option<String> = r.try_get("acknowledged_at")?;
    let state = match (status, &acknowledged_at) {
        (Status::Closed, _) => State::Closed,
        (Status::Open, Some(_)) => State::Acknowledged,
        (Status::Open, None) => State::Open,
    };
    Ok(Alert {
        id: r.try_get("id")?,
        model: r.try_get("model")?,
        model_version: r
            .try_get::<i64, _>("model_version")?
            .try_into()
            .map_err(|_| AlertStoreError::Damaged("a model version"))?,
        category: r.try_get("category")?,
        tier,
        status,
        state,
        subject_kind: r.try_get("subject_kind")?,
        subject: Pseudonym::from_stored(r.try_get("pseudonym")?),
        station: r.try_get("station")?,
        evidence,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        acknowledged_by: r.try_get("acknowledged_by")?,
        acknowledged_at,
        assignee: r.try_get("assignee")?,
        closed_at: r.try_get("closed_at")?,
        outcome: r.try_get("outcome")?,
        closed_by: r.try_get("closed_by")?,
        reopened_from: r.try_get("reopened_from")?,
        suppressing: r.try_get::<i64, _>("suppressing")? == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pseudonymizer;
    use crate::evidence::EvidenceValue;

    fn finding(p: &Pseudonymizer, n: u8, tier: Tier) -> Finding {
        let (subject, pseudonym) = p.subject("person", &[n; 16]);
        let mut evidence = Evidence::new();
        evidence.insert("visits_7d".into(), Some(EvidenceValue::Int(n.into())));
        Finding {
            subject,
            pseudonym,
            station: StationId::new("S01").unwrap(),
            tier,
            evidence,
        }
    }

    fn run(keep_for: u32) -> RunInput<'static> {
        RunInput {
            model: "m",
            version: 1,
            category: "fugitive",
            subject_kind: "person",
            keep_for,
            as_of: Utc::now(),
        }
    }

    async fn apply(store: &AlertStore, r: &RunInput<'_>, f: Vec<Finding>) -> RunOutcome {
        store
            .apply_run(r, f, |_| Ok::<(), String>(()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_open_alert_per_subject_with_hysteresis() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(&dir.path().join("alerts.sqlite"))
            .await
            .unwrap();
        let p = Pseudonymizer::new(&[9; 32]);
        let r = run(2);

        let o = apply(&store, &r, vec![finding(&p, 1, Tier::Yellow)]).await;
        assert_eq!(o.count(Change::Opened), 1);
        let o = apply(&store, &r, vec![finding(&p, 1, Tier::Red)]).await;
        assert_eq!(o.count(Change::Raised), 1);
        // Lower once: held (keep_for = 2); lower twice: follows.
        let o = apply(&store, &r, vec![finding(&p, 1, Tier::Blue)]).await;
        assert!(o.changes.is_empty());
        let o = apply(&store, &r, vec![finding(&p, 1, Tier::Blue)]).await;
        assert_eq!(o.count(Change::Lowered), 1);
        // Gone once: held; gone twice: resolved.
        let o = apply(&store, &r, vec![]).await;
        assert!(o.changes.is_empty());
        let o = apply(&store, &r, vec![]).await;
        assert_eq!(o.count(Change::Resolved), 1);

        let all = store.list(&AlertFilter::default()).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, Status::Closed);
        let h = store
            .history(&AlertId::new(&all[0].id).unwrap())
            .await
            .unwrap();
        let changes: Vec<&str> = h.iter().map(|x| x.change.as_str()).collect();
        assert_eq!(changes, ["opened", "raised", "lowered", "resolved"]);

        // A new finding after resolution opens a new alert.
        let o = apply(&store, &r, vec![finding(&p, 1, Tier::Orange)]).await;
        assert_eq!(o.count(Change::Opened), 1);
        let open = store
            .list(&AlertFilter {
                status: Some(Status::Open),
                ..AlertFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(open.len(), 1);
        assert_ne!(open[0].id, all[0].id);
    }

    #[tokio::test]
    async fn a_failed_audit_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = AlertStore::open(&dir.path().join("alerts.sqlite"))
            .await
            .unwrap();
        let p = Pseudonymizer::new(&[9; 32]);
        let err = store
            .apply_run(&run(1), vec![finding(&p, 1, Tier::Red)], |_| {
                Err("audit log unavailable")
            })
            .await;
        assert!(matches!(err, Err(AlertStoreError::Aborted(_))));
        assert!(
            store
                .list(&AlertFilter::default())
                .await
                .unwrap()
                .is_empty()
        );
    }
}
