-- Alerts hold pseudonyms, stations, tiers and declared evidence only: never a token or an
-- identifier. `subject_key` is a keyed hash of the token under the deployment key.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    model         TEXT    NOT NULL,
    model_version INTEGER NOT NULL,
    as_of         TEXT    NOT NULL,
    started_at    TEXT    NOT NULL,
    subjects      INTEGER NOT NULL,
    opened        INTEGER NOT NULL,
    raised        INTEGER NOT NULL,
    lowered       INTEGER NOT NULL,
    resolved      INTEGER NOT NULL
);

CREATE TABLE alerts (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT    NOT NULL UNIQUE,
    model         TEXT    NOT NULL,
    model_version INTEGER NOT NULL,
    category      TEXT    NOT NULL,
    subject_kind  TEXT    NOT NULL,
    subject_key   TEXT    NOT NULL,
    pseudonym     TEXT    NOT NULL,
    station       TEXT    NOT NULL,
    tier          TEXT    NOT NULL CHECK (tier IN ('red', 'orange', 'yellow', 'blue')),
    status        TEXT    NOT NULL CHECK (status IN ('open', 'closed')),
    evidence      TEXT    NOT NULL,
    first_seen    TEXT    NOT NULL,
    last_seen     TEXT    NOT NULL,
    -- Consecutive runs in which the subject stayed below the alert's tier (hysteresis).
    below_runs    INTEGER NOT NULL DEFAULT 0,
    closed_at     TEXT,
    outcome       TEXT
);
CREATE UNIQUE INDEX alerts_one_open_per_subject ON alerts (model, subject_key) WHERE status = 'open';
CREATE INDEX alerts_by_station ON alerts (station, status, tier);

CREATE TABLE alert_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id  TEXT    NOT NULL REFERENCES alerts (id),
    run_id    INTEGER REFERENCES runs (id),
    at        TEXT    NOT NULL,
    change    TEXT    NOT NULL,
    from_tier TEXT,
    to_tier   TEXT
);
CREATE INDEX alert_history_by_alert ON alert_history (alert_id);
