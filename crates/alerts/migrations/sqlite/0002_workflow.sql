-- Officers' workflow (acknowledge, assign, comment, close), no re-alert after an officer
-- closes, silences. Only columns and tables are added: `alerts.status` keeps its CHECK
-- ('open', 'closed'); the workflow state a reader sees (open, acknowledged, closed) is
-- derived from `status` and `acknowledged_at`.
--
-- Plain SQL that PostgreSQL also accepts (ADD COLUMN one at a time, partial indexes,
-- INTEGER 0/1 flags instead of booleans, times as RFC 3339 UTC text as in 0001).

ALTER TABLE alerts ADD COLUMN acknowledged_by TEXT;
ALTER TABLE alerts ADD COLUMN acknowledged_at TEXT;
ALTER TABLE alerts ADD COLUMN assignee TEXT;
ALTER TABLE alerts ADD COLUMN closed_by TEXT;
-- The officer-closed alert this one was reopened from (the subject's tier rose above it).
ALTER TABLE alerts ADD COLUMN reopened_from TEXT;
-- 1 while an officer-closed alert holds back new alerts for its (model, subject): runs that
-- still find the subject at the same or a lower tier open nothing.
ALTER TABLE alerts ADD COLUMN suppressing INTEGER NOT NULL DEFAULT 0 CHECK (suppressing IN (0, 1));
-- Consecutive runs that did not find the subject of a suppressing alert; at the model's
-- keep_for the condition has ended and the suppression is lifted.
ALTER TABLE alerts ADD COLUMN absent_runs INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX alerts_one_suppressing_per_subject ON alerts (model, subject_key) WHERE suppressing = 1;
CREATE INDEX alerts_by_subject ON alerts (subject_key);
CREATE INDEX alerts_by_pseudonym ON alerts (pseudonym);

-- History rows are the event stream: their id is the event id. `actor` is the principal of
-- an officer action (NULL for model runs); `detail` a short text (a comment's text, a close
-- note); `station` the alert's station at the time of the change.
ALTER TABLE alert_history ADD COLUMN actor TEXT;
ALTER TABLE alert_history ADD COLUMN detail TEXT;
ALTER TABLE alert_history ADD COLUMN station TEXT;

-- Findings a run did not turn into alerts because an officer had closed the subject's alert.
ALTER TABLE runs ADD COLUMN suppressed INTEGER NOT NULL DEFAULT 0;

-- Silences mute notifications of matching alert changes between starts_at and ends_at (or
-- expired_at, when expired early). They never stop alerts from being recorded.
CREATE TABLE silences (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE,
    model      TEXT,
    station    TEXT,
    tier       TEXT    CHECK (tier IS NULL OR tier IN ('red', 'orange', 'yellow', 'blue')),
    category   TEXT,
    pseudonym  TEXT,
    starts_at  TEXT    NOT NULL,
    ends_at    TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    expired_by TEXT,
    expired_at TEXT,
    CHECK (model IS NOT NULL OR station IS NOT NULL OR tier IS NOT NULL OR category IS NOT NULL
           OR pseudonym IS NOT NULL),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_by_end ON silences (ends_at);
