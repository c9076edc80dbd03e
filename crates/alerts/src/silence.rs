//! Silences: mute notifications of matching alert changes for a while (as Alertmanager's).
//! They never stop alerts from being recorded.

use blindwatch_audit::{Principal, SilenceId, Tier};
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::pseudonym::Pseudonym;
use crate::store::{AlertStore, AlertStoreError, ts};
use crate::workflow::{MAX_REASON_CHARS, check_text};
use crate::{parse_tier, tier_name};

/// What a silence matches: every given matcher must equal the alert change's value (the
/// alert's model, its station and tier at the change, its category, its subject). At least
/// one is required.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SilenceMatchers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Pseudonym>,
}

/// The values of one alert change a silence is matched against.
pub(crate) struct MatchTarget<'a> {
    pub model: &'a str,
    pub station: &'a str,
    pub tier: Option<Tier>,
    pub category: &'a str,
    pub subject: &'a str,
}

impl SilenceMatchers {
    fn is_empty(&self) -> bool {
        self.model.is_none()
            && self.station.is_none()
            && self.tier.is_none()
            && self.category.is_none()
            && self.subject.is_none()
    }

    pub(crate) fn matches(&self, t: &MatchTarget<'_>) -> bool {
        self.model.as_deref().is_none_or(|m| m == t.model)
            && self.station.as_deref().is_none_or(|s| s == t.station)
            && self.tier.is_none_or(|x| Some(x) == t.tier)
            && self.category.as_deref().is_none_or(|c| c == t.category)
            && self
                .subject
                .as_ref()
                .is_none_or(|p| p.as_str() == t.subject)
    }
}

/// A silence to add.
#[derive(Debug, Clone)]
pub struct Silence {
    pub matchers: SilenceMatchers,
    pub starts_at: DateTime<Utc>,
    /// Must be after `starts_at` (compared at whole seconds, as stored).
    pub ends_at: DateTime<Utc>,
    pub created_by: Principal,
    /// Why (1..=[`MAX_REASON_CHARS`] characters; no identifiers).
    pub reason: String,
}

/// A stored silence. It is active at `t` when `starts_at <= t < ends_at` and it was not
/// expired at or before `t`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredSilence {
    pub id: SilenceId,
    pub matchers: SilenceMatchers,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub created_at: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
}

impl StoredSilence {
    /// Whether the silence is active at `t` (an RFC 3339 UTC time as the store writes them).
    pub fn is_active_at(&self, t: &str) -> bool {
        self.starts_at.as_str() <= t
            && t < self.ends_at.as_str()
            && self.expired_at.as_deref().is_none_or(|e| t < e)
    }
}

const SILENCE_COLUMNS: &str =
    "id, model, station, tier, category, pseudonym, starts_at, ends_at, created_by,
    created_at, reason, expired_by, expired_at";

fn silence_from_row(r: &sqlx::any::AnyRow) -> Result<StoredSilence, AlertStoreError> {
    let tier = match r.try_get::<Option<&str>, _>("tier")? {
        None => None,
        Some(t) => Some(parse_tier(t).ok_or(AlertStoreError::Damaged("a silence's tier"))?),
    };
    Ok(StoredSilence {
        id: SilenceId::new(r.try_get::<String, _>("id")?)
            .map_err(|_| AlertStoreError::Damaged("a silence id"))?,
        matchers: SilenceMatchers {
            model: r.try_get("model")?,
            station: r.try_get("station")?,
            tier,
            category: r.try_get("category")?,
            subject: r
                .try_get::<Option<String>, _>("pseudonym")?
                .map(Pseudonym::from_stored),
        },
        starts_at: r.try_get("starts_at")?,
        ends_at: r.try_get("ends_at")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        reason: r.try_get("reason")?,
        expired_by: r.try_get("expired_by")?,
        expired_at: r.try_get("expired_at")?,
    })
}

/// Longest model id or category a matcher holds.
pub const MAX_MATCHER_CHARS: usize = 64;
/// Longest station code a matcher holds.
pub const MAX_STATION_CHARS: usize = 16;

/// A model id or category: lower-case ASCII letters, digits and `-`, starting with a letter,
/// at most [`MAX_MATCHER_CHARS`] — the form model files give them.
fn is_slug(s: &str) -> bool {
    s.len() <= MAX_MATCHER_CHARS
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A station code: ASCII letters and digits, at most [`MAX_STATION_CHARS`].
fn is_station(s: &str) -> bool {
    s.len() <= MAX_STATION_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl SilenceMatchers {
    /// The form of each matcher (the caller checks that the values are known ones): at
    /// least one matcher, none empty, model and category as in model files, a station code.
    pub fn check(&self) -> Result<(), AlertStoreError> {
        if self.is_empty() {
            return Err(AlertStoreError::SilenceWithoutMatcher);
        }
        for (name, value, valid, rule) in [
            (
                "model",
                &self.model,
                is_slug as fn(&str) -> bool,
                "not a model id (lower-case letters, digits and `-`, at most 64)",
            ),
            (
                "category",
                &self.category,
                is_slug,
                "not a category (lower-case letters, digits and `-`, at most 64)",
            ),
            (
                "station",
                &self.station,
                is_station,
                "not a station code (letters and digits, at most 16)",
            ),
        ] {
            match value.as_deref() {
                Some(v) if v.trim().is_empty() => return Err(AlertStoreError::EmptyMatcher(name)),
                Some(v) if !valid(v) => {
                    return Err(AlertStoreError::BadMatcher {
                        matcher: name,
                        rule,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl AlertStore {
    /// Adds a silence. Refused without a matcher, with an empty or malformed matcher, when
    /// it does not end after it starts, or with an empty (or too long, or identifier-like)
    /// reason.
    pub async fn add_silence(&self, silence: Silence) -> Result<StoredSilence, AlertStoreError> {
        self.add_silence_audited(silence, no_hook).await
    }

    /// [`AlertStore::add_silence`], with `before_commit` seeing the stored silence before
    /// it is committed (the server writes its audit record there); if it fails, nothing is
    /// stored.
    pub async fn add_silence_audited<E: std::fmt::Display>(
        &self,
        silence: Silence,
        before_commit: impl FnOnce(&StoredSilence) -> Result<(), E>,
    ) -> Result<StoredSilence, AlertStoreError> {
        let m = &silence.matchers;
        m.check()?;
        let (starts_at, ends_at) = (ts(silence.starts_at), ts(silence.ends_at));
        if ends_at <= starts_at {
            return Err(AlertStoreError::SilenceEndsBeforeStart { starts_at, ends_at });
        }
        let reason = check_text("silence reason", &silence.reason, MAX_REASON_CHARS)?;

        let mut tx = self.begin_write().await?;
        let seq: i64 = sqlx::query(
            "INSERT INTO silences (id, model, station, tier, category, pseudonym, starts_at, ends_at, created_by,
                                   created_at, reason)
             VALUES ('', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING seq",
        )
        .bind(m.model.as_deref())
        .bind(m.station.as_deref())
        .bind(m.tier.map(tier_name))
        .bind(m.category.as_deref())
        .bind(m.subject.as_ref().map(Pseudonym::as_str))
        .bind(&starts_at)
        .bind(&ends_at)
        .bind(silence.created_by.as_str())
        .bind(ts(Utc::now()))
        .bind(&reason)
        .fetch_one(&mut *tx)
        .await?
        .try_get("seq")?;
        let id = format!("SIL-{seq:07}");
        sqlx::query("UPDATE silences SET id = $1 WHERE seq = $2")
            .bind(&id)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE seq = $1"
        ))
        .bind(seq)
        .fetch_one(&mut *tx)
        .await?;
        let stored = silence_from_row(&row)?;
        before_commit(&stored).map_err(|e| AlertStoreError::Aborted(e.to_string()))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// All silences (`None`), or those active at a time, oldest first.
    pub async fn list_silences(
        &self,
        active_at: Option<DateTime<Utc>>,
    ) -> Result<Vec<StoredSilence>, AlertStoreError> {
        let rows = match active_at {
            None => {
                sqlx::query(&format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences ORDER BY seq"
                ))
                .fetch_all(self.db.pool())
                .await?
            }
            Some(t) => {
                let t = ts(t);
                sqlx::query(&format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences
                     WHERE starts_at <= $1 AND ends_at > $1 AND (expired_at IS NULL OR expired_at > $1)
                     ORDER BY seq"
                ))
                .bind(&t)
                .fetch_all(self.db.pool())
                .await?
            }
        };
        rows.iter().map(silence_from_row).collect()
    }

    /// Ends a silence at `at` (before it starts, it then never starts). Refused for an
    /// unknown silence or one that has already ended or been expired.
    pub async fn expire_silence(
        &self,
        id: &SilenceId,
        actor: &Principal,
        at: DateTime<Utc>,
    ) -> Result<StoredSilence, AlertStoreError> {
        self.expire_silence_audited(id, actor, at, no_hook).await
    }

    /// [`AlertStore::expire_silence`], with `before_commit` seeing the expired silence
    /// before it is committed; if it fails, nothing changes.
    pub async fn expire_silence_audited<E: std::fmt::Display>(
        &self,
        id: &SilenceId,
        actor: &Principal,
        at: DateTime<Utc>,
        before_commit: impl FnOnce(&StoredSilence) -> Result<(), E>,
    ) -> Result<StoredSilence, AlertStoreError> {
        let at = ts(at);
        let mut tx = self.begin_write().await?;
        let select = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = $1");
        let row = sqlx::query(&select)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| AlertStoreError::UnknownSilence(id.clone()))?;
        let current = silence_from_row(&row)?;
        let ended = match &current.expired_at {
            Some(e) => Some(e.clone()),
            None if current.ends_at <= at => Some(current.ends_at.clone()),
            None => None,
        };
        if let Some(ended) = ended {
            return Err(AlertStoreError::SilenceEnded {
                id: id.clone(),
                at: ended,
            });
        }
        sqlx::query("UPDATE silences SET expired_at = $1, expired_by = $2 WHERE id = $3")
            .bind(&at)
            .bind(actor.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&select)
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let stored = silence_from_row(&row)?;
        before_commit(&stored).map_err(|e| AlertStoreError::Aborted(e.to_string()))?;
        tx.commit().await?;
        Ok(stored)
    }
}

fn no_hook(_: &StoredSilence) -> Result<(), std::convert::Infallible> {
    Ok(())
}
