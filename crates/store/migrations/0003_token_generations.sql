-- A dataset's tokens are under one mode and key at a time: its token generation. The first
-- contribution starts generation 1; `blindwatch dataset rotate-tokens` starts the next
-- (audited), and from then on only that generation's contributions are current. Earlier
-- generations stay stored and verifiable.
CREATE TABLE token_generations (
    table_name   TEXT NOT NULL,
    generation   INTEGER NOT NULL CHECK (generation >= 1),
    token_mode   TEXT NOT NULL,
    token_key_id TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    started_by   TEXT NOT NULL,
    PRIMARY KEY (table_name, generation)
);

ALTER TABLE contributions ADD COLUMN generation INTEGER NOT NULL DEFAULT 1;

-- Catalogs from before: generation 1 under the latest contribution's tokens.
INSERT INTO token_generations (table_name, generation, token_mode, token_key_id, started_at, started_by)
SELECT c.table_name, 1, c.token_mode, c.token_key_id, c.ingested_at, 'migration'
FROM contributions c
WHERE c.sequence = (SELECT max(sequence) FROM contributions WHERE table_name = c.table_name);

-- An accepted contribution is never changed or removed: its file and its row are the record.
CREATE TRIGGER contributions_never_updated BEFORE UPDATE ON contributions
BEGIN
    SELECT RAISE(ABORT, 'accepted contributions are never changed');
END;

CREATE TRIGGER contributions_never_deleted BEFORE DELETE ON contributions
BEGIN
    SELECT RAISE(ABORT, 'accepted contributions are never removed');
END;
