-- API users of the platform server. Only a hash of each bearer token is kept: the token
-- itself is printed once, when the user is added.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('officer', 'specialist', 'auditor', 'partner')),
    station     TEXT,
    duty        INTEGER NOT NULL DEFAULT 0,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL,
    revoked_at  TEXT,
    CHECK ((role = 'officer') = (station IS NOT NULL))
);
CREATE UNIQUE INDEX users_one_active_name ON users (role, name) WHERE revoked_at IS NULL;
