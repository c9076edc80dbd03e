//! Officers' actions on alerts: acknowledge, assign, comment, close.

use blindwatch_audit::{AlertId, Principal};
use chrono::{DateTime, Utc};

use crate::store::{
    Alert, AlertStore, AlertStoreError, EventKind, NewHistory, Status, fetch_alert, ts,
    write_history,
};
use crate::tier_name;

/// Longest comment or close note, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// Longest silence reason, in characters.
pub const MAX_REASON_CHARS: usize = 500;
/// Longest reveal justification, in characters.
pub const MAX_JUSTIFICATION_CHARS: usize = 500;

/// How an officer closed an alert. (A run that finds the condition ended closes it as
/// `resolved`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The risk was dealt with.
    Handled,
    /// The model was wrong about this subject.
    FalsePositive,
    /// Another alert covers the same case.
    Duplicate,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::FalsePositive => "false_positive",
            Outcome::Duplicate => "duplicate",
        }
    }
}

/// One officer action, for [`AlertStore::act`].
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    Acknowledge,
    Assign {
        assignee: &'a Principal,
    },
    Comment {
        text: &'a str,
    },
    Close {
        outcome: Outcome,
        note: Option<&'a str>,
    },
}

impl Action<'_> {
    fn verb(&self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledged",
            Action::Assign { .. } => "assigned",
            Action::Comment { .. } => "commented on",
            Action::Close { .. } => "closed again",
        }
    }
}

/// Checks officers' free text (comments, close notes, justifications, silence reasons): not
/// blank, at most `max` characters, and nothing that looks like a phone, ID-card or bank-card
/// number however it is written ([`crate::text`]). Returns the trimmed text. Never echoes
/// the text in the error.
pub fn check_text(field: &'static str, text: &str, max: usize) -> Result<String, AlertStoreError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AlertStoreError::EmptyText { field });
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(AlertStoreError::TextTooLong { field, chars, max });
    }
    if crate::text::looks_like_identifier(text) {
        return Err(AlertStoreError::TextLooksLikeIdentifier { field });
    }
    Ok(text.to_owned())
}

impl AlertStore {
    /// The officer `actor` acknowledges the alert: they have seen it and are on it. Refused
    /// on a closed or already acknowledged alert.
    pub async fn acknowledge(
        &self,
        alert: &AlertId,
        actor: &Principal,
        at: DateTime<Utc>,
    ) -> Result<Alert, AlertStoreError> {
        self.act(alert, actor, Action::Acknowledge, at, no_hook)
            .await
    }

    /// Assigns the alert to `assignee` (reassigns when it has one). Refused on a closed
    /// alert or when `assignee` already has it.
    pub async fn assign(
        &self,
        alert: &AlertId,
        actor: &Principal,
        assignee: &Principal,
        at: DateTime<Utc>,
    ) -> Result<Alert, AlertStoreError> {
        self.act(alert, actor, Action::Assign { assignee }, at, no_hook)
            .await
    }

    /// Adds a comment (1..=[`MAX_COMMENT_CHARS`] characters, trimmed) to the alert's
    /// history. Refused on a closed alert.
    pub async fn comment(
        &self,
        alert: &AlertId,
        actor: &Principal,
        text: &str,
        at: DateTime<Utc>,
    ) -> Result<Alert, AlertStoreError> {
        self.act(alert, actor, Action::Comment { text }, at, no_hook)
            .await
    }

    /// An officer closes the alert with `outcome` and an optional note. Later runs that find
    /// the subject for this model at the same or a lower tier open no new alert (see
    /// [`AlertStore::apply_run`]). Refused on a closed alert.
    pub async fn close_alert(
        &self,
        alert: &AlertId,
        actor: &Principal,
        outcome: Outcome,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Alert, AlertStoreError> {
        self.act(alert, actor, Action::Close { outcome, note }, at, no_hook)
            .await
    }

    /// Applies one officer action in one transaction and writes its history row (actor and
    /// detail). `before_commit` sees the updated alert before it is committed (the server
    /// writes its audit record there); if it fails, nothing is stored. A refused action
    /// changes nothing.
    pub async fn act<E: std::fmt::Display>(
        &self,
        alert: &AlertId,
        actor: &Principal,
        action: Action<'_>,
        at: DateTime<Utc>,
        before_commit: impl FnOnce(&Alert) -> Result<(), E>,
    ) -> Result<Alert, AlertStoreError> {
        // Text is checked before the database is touched.
        let text = match action {
            Action::Comment { text } => Some(check_text("comment", text, MAX_COMMENT_CHARS)?),
            Action::Close {
                note: Some(note), ..
            } => Some(check_text("close note", note, MAX_COMMENT_CHARS)?),
            _ => None,
        };
        let now = ts(at);
        let mut tx = self.begin_write().await?;
        let current = fetch_alert(&mut tx, alert.as_str())
            .await?
            .ok_or_else(|| AlertStoreError::UnknownAlert(alert.clone()))?;
        if current.status == Status::Closed {
            return Err(AlertStoreError::AlertClosed {
                alert: alert.clone(),
                outcome: current.outcome.unwrap_or_default(),
                action: action.verb(),
            });
        }
        let (change, detail) = match action {
            Action::Acknowledge => {
                if let Some(by) = current.acknowledged_by {
                    return Err(AlertStoreError::AlreadyAcknowledged {
                        alert: alert.clone(),
                        by,
                    });
                }
                sqlx::query(
                    "UPDATE alerts SET acknowledged_by = $1, acknowledged_at = $2 WHERE id = $3",
                )
                .bind(actor.as_str())
                .bind(&now)
                .bind(alert.as_str())
                .execute(&mut *tx)
                .await?;
                (
                    EventKind::Acknowledged,
                    format!("acknowledged at {}", tier_name(current.tier)),
                )
            }
            Action::Assign { assignee } => {
                let detail = match &current.assignee {
                    Some(a) if a == assignee.as_str() => {
                        return Err(AlertStoreError::AlreadyAssigned {
                            alert: alert.clone(),
                            assignee: a.clone(),
                        });
                    }
                    Some(a) => format!("reassigned from {a} to {assignee}"),
                    None => format!("assigned to {assignee}"),
                };
                sqlx::query("UPDATE alerts SET assignee = $1 WHERE id = $2")
                    .bind(assignee.as_str())
                    .bind(alert.as_str())
                    .execute(&mut *tx)
                    .await?;
                (EventKind::Assigned, detail)
            }
            Action::Comment { .. } => (EventKind::Commented, text.unwrap_or_default()),
            Action::Close { outcome, .. } => {
                // Officer-closed alerts hold back new alerts for the subject (suppressing).
                sqlx::query(
                    "UPDATE alerts SET status = 'closed', closed_at = $1, outcome = $2, closed_by = $3, below_runs = 0,
                                       suppressing = 1, absent_runs = 0 WHERE id = $4",
                )
                .bind(&now)
                .bind(outcome.as_str())
                .bind(actor.as_str())
                .bind(alert.as_str())
                .execute(&mut *tx)
                .await?;
                let detail = match text {
                    Some(note) => format!("closed as {}: {note}", outcome.as_str()),
                    None => format!("closed as {}", outcome.as_str()),
                };
                (EventKind::Closed, detail)
            }
        };
        write_history(
            &mut tx,
            &NewHistory {
                alert: alert.as_str(),
                run_id: None,
                at: &now,
                change,
                from: Some(current.tier),
                to: current.tier,
                station: &current.station,
                actor: Some(actor.as_str()),
                detail: Some(&detail),
            },
        )
        .await?;
        let updated =
            fetch_alert(&mut tx, alert.as_str())
                .await?
                .ok_or(AlertStoreError::Damaged(
                    "an alert vanished while it was changed",
                ))?;
        before_commit(&updated).map_err(|e| AlertStoreError::Aborted(e.to_string()))?;
        tx.commit().await?;
        Ok(updated)
    }
}

fn no_hook(_: &Alert) -> Result<(), std::convert::Infallible> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert_eq!(
            check_text("comment", "  seen at 14:05 ", 20).ok(),
            Some("seen at 14:05".into())
        );
        assert!(matches!(
            check_text("comment", " \n\t ", 20),
            Err(AlertStoreError::EmptyText { field: "comment" })
        ));
        assert!(matches!(
            check_text("comment", &"字".repeat(21), 20),
            Err(AlertStoreError::TextTooLong {
                chars: 21,
                max: 20,
                ..
            })
        ));
        assert!(check_text("comment", &"字".repeat(20), 20).is_ok());
        // Ten digits pass; eleven (a mobile number), ASCII or full-width, do not.
        assert!(check_text("comment", "case 2024050112", 40).is_ok());
        for bad in ["call 13800138000", "ID １３８００１３８０００"] {
            let e = check_text("comment", bad, 40).err();
            assert!(
                matches!(e, Some(AlertStoreError::TextLooksLikeIdentifier { .. })),
                "{bad}"
            );
            // The refusal never repeats the text.
            let msg = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(!msg.contains("138"), "{msg}");
        }
    }
}
