//! Alert events: the history rows in id order, with whether each should notify.

use std::collections::HashMap;

use blindwatch_audit::{SilenceId, Tier};
use sqlx::Row;

use crate::silence::{MatchTarget, StoredSilence};
use crate::store::{
    ALERT_COLUMNS, Alert, AlertStore, AlertStoreError, EventKind, HistoryEntry, alert_from_row,
    history_from_row,
};

/// Most events [`AlertStore::events_after`] returns at once.
pub const MAX_EVENTS_PAGE: u32 = 1000;

/// Why an event does not notify.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Muted {
    /// An active silence matched (the lowest-numbered one, when several do).
    Silence(SilenceId),
    /// The subject had an open red alert (this one, under another model) and this change
    /// left its alert below red.
    Inhibited { by: String },
}

/// One change of one alert: what the live stream sends and notifications are made from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertEvent {
    /// Increasing over the whole store (the history row id): resume after the last one seen.
    pub id: i64,
    /// The alert as it is now (not as it was at the event; `from`/`to` give the tiers of
    /// the change).
    pub alert: Alert,
    pub change: EventKind,
    pub at: String,
    /// The officer, for officer actions; None for model runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// Whether officers should be notified of it.
    pub notify: bool,
    /// Why a run change does not notify.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_by: Option<Muted>,
}

/// What, of an event's alert, deciding `notify` needs.
struct EventRow {
    entry: HistoryEntry,
    alert_id: String,
    station: String,
    subject_key: String,
    model: String,
    category: String,
    pseudonym: String,
}

impl AlertStore {
    /// The id of the latest event, 0 when there is none (a live stream without a
    /// `Last-Event-ID` starts after it).
    pub async fn last_event_id(&self) -> Result<i64, AlertStoreError> {
        let row = sqlx::query("SELECT MAX(id) AS id FROM alert_history")
            .fetch_one(self.db.pool())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("id")?.unwrap_or(0))
    }

    /// Events with an id above `after`, oldest first, at most `limit` (capped at
    /// [`MAX_EVENTS_PAGE`]).
    ///
    /// `notify` is computed here, at read time, from the stored data, and does not depend
    /// on when it is read except through silences:
    /// - officer actions and lifted suppressions never notify;
    /// - a run change (opened, reopened, raised, lowered, resolved) is muted by a silence
    ///   that matches the alert's model, category and subject and its station and tier at
    ///   the change, and is active at the change's time `at`, whenever the silence was
    ///   added (so a silence added later mutes the change when it is read again; expiring a
    ///   silence does not unmute changes before the expiry);
    /// - otherwise it is inhibited when the change left its alert below red and another
    ///   alert of the same subject (any model) was open at red just before the change, as
    ///   rebuilt from the other alert's history rows with a lower id, so replaying the
    ///   stream gives the same answer.
    pub async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AlertEvent>, AlertStoreError> {
        let limit = limit.min(MAX_EVENTS_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT h.id, h.run_id, h.at, h.change, h.from_tier, h.to_tier, h.actor, h.detail, h.alert_id,
                    COALESCE(h.station, a.station) AS event_station, a.subject_key, a.model, a.category, a.pseudonym
             FROM alert_history h JOIN alerts a ON a.id = h.alert_id
             WHERE h.id > $1 ORDER BY h.id LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for r in &rows {
            events.push(EventRow {
                entry: history_from_row(r)?,
                alert_id: r.try_get("alert_id")?,
                station: r.try_get("event_station")?,
                subject_key: r.try_get("subject_key")?,
                model: r.try_get("model")?,
                category: r.try_get("category")?,
                pseudonym: r.try_get("pseudonym")?,
            });
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }

        let mut ids: Vec<&str> = events.iter().map(|e| e.alert_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut alerts: HashMap<String, Alert> = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {ALERT_COLUMNS} FROM alerts WHERE id IN ({})",
                (1..=chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(self.db.pool()).await? {
                let a = alert_from_row(&row)?;
                alerts.insert(a.id.clone(), a);
            }
        }
        let silences = self.list_silences(None).await?;

        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let muted_by = if e.entry.change.is_run_change() {
                match muting_silence(&silences, &e) {
                    Some(id) => Some(Muted::Silence(id)),
                    None if e.entry.to != Some(Tier::Red) => self
                        .red_alert_before(&e.subject_key, &e.alert_id, e.entry.id)
                        .await?
                        .map(|by| Muted::Inhibited { by }),
                    None => None,
                }
            } else {
                None
            };
            let alert = alerts
                .get(&e.alert_id)
                .cloned()
                .ok_or(AlertStoreError::Damaged("an event's alert"))?;
            out.push(AlertEvent {
                id: e.entry.id,
                alert,
                change: e.entry.change,
                at: e.entry.at,
                actor: e.entry.actor,
                from: e.entry.from,
                to: e.entry.to,
                detail: e.entry.detail,
                run_id: e.entry.run_id,
                notify: e.entry.change.is_run_change() && muted_by.is_none(),
                muted_by,
            });
        }
        Ok(out)
    }

    /// Another alert of the subject that was open at red just before event `event`: its
    /// latest history row before the event leaves it at red and not closed.
    async fn red_alert_before(
        &self,
        subject_key: &str,
        alert: &str,
        event: i64,
    ) -> Result<Option<String>, AlertStoreError> {
        let row = sqlx::query(
            "SELECT b.id FROM alerts b JOIN alert_history h ON h.alert_id = b.id
             WHERE b.subject_key = $1 AND b.id <> $2
               AND h.id = (SELECT MAX(h2.id) FROM alert_history h2 WHERE h2.alert_id = b.id AND h2.id < $3)
               AND h.to_tier = 'red'
               AND h.change NOT IN ('resolved', 'closed', 'suppression_lifted')
             ORDER BY b.seq LIMIT 1",
        )
        .bind(subject_key)
        .bind(alert)
        .bind(event)
        .fetch_optional(self.db.pool())
        .await?;
        Ok(row.map(|r| r.try_get("id")).transpose()?)
    }
}

fn muting_silence(silences: &[StoredSilence], e: &EventRow) -> Option<SilenceId> {
    let target = MatchTarget {
        model: &e.model,
        station: &e.station,
        tier: e.entry.to,
        category: &e.category,
        subject: &e.pseudonym,
    };
    silences
        .iter()
        .find(|s| s.is_active_at(&e.entry.at) && s.matchers.matches(&target))
        .map(|s| s.id.clone())
}
