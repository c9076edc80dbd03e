CREATE TABLE partners (
    name          TEXT PRIMARY KEY,
    public_key    BLOB NOT NULL,
    key_id        TEXT NOT NULL UNIQUE,
    registered_at TEXT NOT NULL
);

CREATE TABLE partner_datasets (
    partner    TEXT NOT NULL REFERENCES partners(name) ON DELETE CASCADE,
    table_name TEXT NOT NULL,
    PRIMARY KEY (partner, table_name)
);

CREATE TABLE contributions (
    id            INTEGER PRIMARY KEY,
    table_name    TEXT NOT NULL,
    partner       TEXT NOT NULL,
    dataset       TEXT NOT NULL,
    sequence      INTEGER NOT NULL,
    file_path     TEXT NOT NULL,
    manifest_path TEXT NOT NULL,
    file_sha256   TEXT NOT NULL,
    file_bytes    INTEGER NOT NULL,
    row_count     INTEGER NOT NULL,
    schema_digest TEXT NOT NULL,
    token_mode    TEXT NOT NULL,
    token_key_id  TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    ingested_at   TEXT NOT NULL,
    UNIQUE (table_name, sequence)
);
