//! The subject card: one subject's alerts across models.

use std::collections::BTreeMap;

use blindwatch_audit::{AlertId, Tier};
use sqlx::Row;

use crate::pseudonym::Pseudonym;
use crate::store::{
    ALERT_COLUMNS, Alert, AlertStore, AlertStoreError, HISTORY_COLUMNS, HistoryEntry, Status,
    TIER_RANK_SQL, alert_from_row, history_from_row,
};
use crate::tier_rank;

/// Everything the store holds about one subject, across models.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubjectCard {
    pub pseudonym: Pseudonym,
    pub subject_kind: String,
    /// The highest tier among the subject's open alerts; None when none is open.
    pub highest_tier: Option<Tier>,
    /// Stations of all its alerts, sorted.
    pub stations: Vec<String>,
    /// Open alerts first, then closed; each highest tier first, then most recently seen.
    pub alerts: Vec<Alert>,
    /// Each alert's history (run changes, officer actions, comments), oldest first.
    pub history: BTreeMap<String, Vec<HistoryEntry>>,
}

impl AlertStore {
    /// The card of the subject with this pseudonym, None when it has no alert. Refused in
    /// the rare case that two subjects share the pseudonym (use
    /// [`AlertStore::subject_card_of_alert`]).
    pub async fn subject_card(
        &self,
        pseudonym: &Pseudonym,
    ) -> Result<Option<SubjectCard>, AlertStoreError> {
        let keys = sqlx::query("SELECT DISTINCT subject_key FROM alerts WHERE pseudonym = $1")
            .bind(pseudonym.as_str())
            .fetch_all(self.db.pool())
            .await?;
        match keys.as_slice() {
            [] => Ok(None),
            [one] => self.card(&one.try_get::<String, _>("subject_key")?).await,
            _ => Err(AlertStoreError::AmbiguousPseudonym(pseudonym.clone())),
        }
    }

    /// The card of the subject of `alert`.
    pub async fn subject_card_of_alert(
        &self,
        alert: &AlertId,
    ) -> Result<SubjectCard, AlertStoreError> {
        let key: String = sqlx::query("SELECT subject_key FROM alerts WHERE id = $1")
            .bind(alert.as_str())
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| AlertStoreError::UnknownAlert(alert.clone()))?
            .try_get("subject_key")?;
        self.card(&key).await?.ok_or(AlertStoreError::Damaged(
            "an alert vanished while it was read",
        ))
    }

    async fn card(&self, subject_key: &str) -> Result<Option<SubjectCard>, AlertStoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE subject_key = $1
             ORDER BY CASE status WHEN 'open' THEN 0 ELSE 1 END, {TIER_RANK_SQL} DESC, last_seen DESC, seq DESC"
        ))
        .bind(subject_key)
        .fetch_all(self.db.pool())
        .await?;
        let alerts = rows
            .iter()
            .map(alert_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = alerts.first() else {
            return Ok(None);
        };
        let (pseudonym, subject_kind) = (first.subject.clone(), first.subject_kind.clone());
        let highest_tier = alerts
            .iter()
            .filter(|a| a.status == Status::Open)
            .map(|a| a.tier)
            .max_by_key(|t| tier_rank(*t));
        let mut stations: Vec<String> = alerts.iter().map(|a| a.station.clone()).collect();
        stations.sort();
        stations.dedup();

        let mut history: BTreeMap<String, Vec<HistoryEntry>> =
            alerts.iter().map(|a| (a.id.clone(), Vec::new())).collect();
        let rows = sqlx::query(&format!(
            "SELECT {HISTORY_COLUMNS}, alert_id FROM alert_history
             WHERE alert_id IN (SELECT id FROM alerts WHERE subject_key = $1) ORDER BY id"
        ))
        .bind(subject_key)
        .fetch_all(self.db.pool())
        .await?;
        for r in &rows {
            let alert: String = r.try_get("alert_id")?;
            history.entry(alert).or_default().push(history_from_row(r)?);
        }
        Ok(Some(SubjectCard {
            pseudonym,
            subject_kind,
            highest_tier,
            stations,
            alerts,
            history,
        }))
    }
}
