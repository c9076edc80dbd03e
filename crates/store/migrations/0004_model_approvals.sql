-- Partners' approvals of warning models: the DSSE envelope exactly as the partner signed it,
-- so every registration and every run verifies it again under the partner's current key.
-- One row per partner and model digest: an approval of another version or text is another row.
CREATE TABLE model_approvals (
    model       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    partner     TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    envelope    BLOB NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (model, partner, digest)
);
