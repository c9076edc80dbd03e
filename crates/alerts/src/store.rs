//! The alert store (SQLite through sqlx).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use blindwatch_audit::{AlertId, StationId, Tier};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::evidence::Evidence;
use crate::pseudonym::{Pseudonym, SubjectKey};
use crate::{parse_tier, tier_name, tier_rank};

#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error(
        "alert store database error: {0}; check that the data directory is writable and not damaged"
    )]
    Db(#[from] sqlx::Error),
    #[error("alert store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the alert store holds a damaged record ({0}); restore alerts.sqlite from a backup")]
    Damaged(&'static str),
    #[error("the run was not recorded: {0}")]
    Aborted(String),
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
    /// Runs a lower tier (or no finding) must hold before the alert follows it (≥ 1).
    pub keep_for: u32,
    /// The time the run evaluates as of (first/last seen).
    pub as_of: DateTime<Utc>,
}

/// How one alert changed in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    Raised,
    Lowered,
    Resolved,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Raised => "raised",
            Change::Lowered => "lowered",
            Change::Resolved => "resolved",
        }
    }
}

/// One change, for the audit log and the caller's report.
#[derive(Debug, Clone)]
pub struct AlertChange {
    pub alert: AlertId,
    pub change: Change,
    pub from: Option<Tier>,
    pub to: Tier,
    pub station: StationId,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub run_id: i64,
    pub subjects: u64,
    pub changes: Vec<AlertChange>,
    /// Open alerts the run confirmed at their tier (evidence refreshed).
    pub unchanged: u64,
}

impl RunOutcome {
    pub fn count(&self, c: Change) -> u64 {
        self.changes.iter().filter(|x| x.change == c).count() as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Closed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Closed => "closed",
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
    pub subject_kind: String,
    pub subject: Pseudonym,
    pub station: String,
    pub evidence: Evidence,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Which alerts to list (all when empty).
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    pub station: Option<String>,
    pub tier: Option<Tier>,
    pub model: Option<String>,
    pub status: Option<Status>,
}

#[derive(Clone)]
pub struct AlertStore {
    pool: SqlitePool,
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct OpenAlert {
    id: String,
    tier: Tier,
    station: String,
    below_runs: u32,
}

impl AlertStore {
    /// Opens (creating if needed) the alert store at `path`.
    pub async fn open(path: &Path) -> Result<AlertStore, AlertStoreError> {
        // Rollback journal, as the catalog: between commands only alerts.sqlite exists.
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Delete)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(AlertStore { pool })
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Applies one model run's findings in one transaction. `before_commit` sees the outcome
    /// before it is committed (the caller writes the audit records there); if it fails,
    /// nothing of the run is stored.
    pub async fn apply_run<E: std::fmt::Display>(
        &self,
        run: &RunInput<'_>,
        findings: Vec<Finding>,
        before_commit: impl FnOnce(&RunOutcome) -> Result<(), E>,
    ) -> Result<RunOutcome, AlertStoreError> {
        let keep_for = run.keep_for.max(1);
        let now = ts(run.as_of);
        let started = ts(Utc::now());
        let mut tx = self.pool.begin().await?;

        let mut open: HashMap<String, OpenAlert> = HashMap::new();
        let rows = sqlx::query(
            "SELECT id, subject_key, tier, station, below_runs FROM alerts WHERE model = ? AND status = 'open'",
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
                    below_runs: r.try_get::<i64, _>("below_runs")?.try_into().unwrap_or(0),
                },
            );
        }

        let run_id: i64 = sqlx::query(
            "INSERT INTO runs (model, model_version, as_of, started_at, subjects, opened, raised, lowered, resolved)
             VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0) RETURNING id",
        )
        .bind(run.model)
        .bind(run.version)
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
        let station_id =
            |s: &str| StationId::new(s).map_err(|_| AlertStoreError::Damaged("an alert's station"));

        for f in findings {
            let evidence = serde_json::to_string(&f.evidence)
                .map_err(|_| AlertStoreError::Damaged("evidence"))?;
            match open.remove(f.subject.as_str()) {
                None => {
                    let seq: i64 = sqlx::query(
                        "INSERT INTO alerts (id, model, model_version, category, subject_kind, subject_key, pseudonym,
                                             station, tier, status, evidence, first_seen, last_seen)
                         VALUES ('', ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?) RETURNING seq",
                    )
                    .bind(run.model)
                    .bind(run.version)
                    .bind(run.category)
                    .bind(run.subject_kind)
                    .bind(f.subject.as_str())
                    .bind(f.pseudonym.as_str())
                    .bind(f.station.as_str())
                    .bind(tier_name(f.tier))
                    .bind(&evidence)
                    .bind(&now)
                    .bind(&now)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("seq")?;
                    let id = format!("A-{seq:07}");
                    sqlx::query("UPDATE alerts SET id = ? WHERE seq = ?")
                        .bind(&id)
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                    history(&mut tx, &id, run_id, &now, Change::Opened, None, f.tier).await?;
                    outcome.changes.push(AlertChange {
                        alert: AlertId::new(&id)
                            .map_err(|_| AlertStoreError::Damaged("an alert id"))?,
                        change: Change::Opened,
                        from: None,
                        to: f.tier,
                        station: f.station.clone(),
                    });
                }
                Some(a) => {
                    let (tier, below, change) = if tier_rank(f.tier) > tier_rank(a.tier) {
                        (f.tier, 0, Some(Change::Raised))
                    } else if tier_rank(f.tier) == tier_rank(a.tier) {
                        (a.tier, 0, None)
                    } else if a.below_runs + 1 >= keep_for {
                        (f.tier, 0, Some(Change::Lowered))
                    } else {
                        (a.tier, a.below_runs + 1, None)
                    };
                    sqlx::query(
                        "UPDATE alerts SET tier = ?, below_runs = ?, evidence = ?, last_seen = ?, station = ?,
                                           model_version = ? WHERE id = ?",
                    )
                    .bind(tier_name(tier))
                    .bind(below)
                    .bind(&evidence)
                    .bind(&now)
                    .bind(f.station.as_str())
                    .bind(run.version)
                    .bind(&a.id)
                    .execute(&mut *tx)
                    .await?;
                    match change {
                        Some(c) => {
                            history(&mut tx, &a.id, run_id, &now, c, Some(a.tier), tier).await?;
                            outcome.changes.push(AlertChange {
                                alert: AlertId::new(&a.id)
                                    .map_err(|_| AlertStoreError::Damaged("an alert id"))?,
                                change: c,
                                from: Some(a.tier),
                                to: tier,
                                station: f.station.clone(),
                            });
                        }
                        None => outcome.unchanged += 1,
                    }
                }
            }
        }

        // Open alerts the run did not find: the condition no longer holds.
        let mut rest: Vec<OpenAlert> = open.into_values().collect();
        rest.sort_by(|a, b| a.id.cmp(&b.id));
        for a in rest {
            if a.below_runs + 1 >= keep_for {
                sqlx::query(
                    "UPDATE alerts SET status = 'closed', closed_at = ?, outcome = 'resolved', below_runs = 0 WHERE id = ?",
                )
                .bind(&now)
                .bind(&a.id)
                .execute(&mut *tx)
                .await?;
                history(
                    &mut tx,
                    &a.id,
                    run_id,
                    &now,
                    Change::Resolved,
                    Some(a.tier),
                    a.tier,
                )
                .await?;
                outcome.changes.push(AlertChange {
                    alert: AlertId::new(&a.id)
                        .map_err(|_| AlertStoreError::Damaged("an alert id"))?,
                    change: Change::Resolved,
                    from: Some(a.tier),
                    to: a.tier,
                    station: station_id(&a.station)?,
                });
            } else {
                sqlx::query("UPDATE alerts SET below_runs = below_runs + 1 WHERE id = ?")
                    .bind(&a.id)
                    .execute(&mut *tx)
                    .await?;
                outcome.unchanged += 1;
            }
        }

        sqlx::query(
            "UPDATE runs SET opened = ?, raised = ?, lowered = ?, resolved = ? WHERE id = ?",
        )
        .bind(outcome.count(Change::Opened) as i64)
        .bind(outcome.count(Change::Raised) as i64)
        .bind(outcome.count(Change::Lowered) as i64)
        .bind(outcome.count(Change::Resolved) as i64)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;

        before_commit(&outcome).map_err(|e| AlertStoreError::Aborted(e.to_string()))?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Alerts matching `filter`, highest tier first, then most recently seen.
    pub async fn list(&self, filter: &AlertFilter) -> Result<Vec<Alert>, AlertStoreError> {
        let mut sql = String::from(
            "SELECT id, model, model_version, category, tier, status, subject_kind, pseudonym, station, evidence,
                    first_seen, last_seen, closed_at, outcome FROM alerts WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        if let Some(s) = &filter.station {
            sql.push_str(" AND station = ?");
            binds.push(s.clone());
        }
        if let Some(t) = filter.tier {
            sql.push_str(" AND tier = ?");
            binds.push(tier_name(t).to_owned());
        }
        if let Some(m) = &filter.model {
            sql.push_str(" AND model = ?");
            binds.push(m.clone());
        }
        if let Some(s) = filter.status {
            sql.push_str(" AND status = ?");
            binds.push(s.as_str().to_owned());
        }
        sql.push_str(
            " ORDER BY CASE tier WHEN 'red' THEN 0 WHEN 'orange' THEN 1 WHEN 'yellow' THEN 2 ELSE 3 END,
                       last_seen DESC, seq",
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(alert_from_row).collect()
    }

    /// One alert's history: (time, change, from tier, to tier), oldest first.
    pub async fn history(
        &self,
        alert: &str,
    ) -> Result<Vec<(String, String, Option<Tier>, Option<Tier>)>, AlertStoreError> {
        let rows = sqlx::query(
            "SELECT at, change, from_tier, to_tier FROM alert_history WHERE alert_id = ? ORDER BY id",
        )
        .bind(alert)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let tier = |c: &str| -> Result<Option<Tier>, AlertStoreError> {
                    Ok(r.try_get::<Option<&str>, _>(c)?.and_then(parse_tier))
                };
                Ok((
                    r.try_get("at")?,
                    r.try_get("change")?,
                    tier("from_tier")?,
                    tier("to_tier")?,
                ))
            })
            .collect()
    }
}

async fn history(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    alert: &str,
    run_id: i64,
    at: &str,
    change: Change,
    from: Option<Tier>,
    to: Tier,
) -> Result<(), AlertStoreError> {
    sqlx::query(
        "INSERT INTO alert_history (alert_id, run_id, at, change, from_tier, to_tier) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(alert)
    .bind(run_id)
    .bind(at)
    .bind(change.as_str())
    .bind(from.map(tier_name))
    .bind(tier_name(to))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn alert_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Alert, AlertStoreError> {
    let tier = parse_tier(r.try_get::<&str, _>("tier")?)
        .ok_or(AlertStoreError::Damaged("an alert's tier"))?;
    let status = match r.try_get::<&str, _>("status")? {
        "open" => Status::Open,
        "closed" => Status::Closed,
        _ => return Err(AlertStoreError::Damaged("an alert's status")),
    };
    let evidence: Evidence = serde_json::from_str(r.try_get::<&str, _>("evidence")?)
        .map_err(|_| AlertStoreError::Damaged("an alert's evidence"))?;
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
        subject_kind: r.try_get("subject_kind")?,
        subject: Pseudonym::from_stored(r.try_get("pseudonym")?),
        station: r.try_get("station")?,
        evidence,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        closed_at: r.try_get("closed_at")?,
        outcome: r.try_get("outcome")?,
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
        let h = store.history(&all[0].id).await.unwrap();
        let changes: Vec<&str> = h.iter().map(|x| x.1.as_str()).collect();
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
