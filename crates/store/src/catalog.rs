//! The catalog: partners, which datasets each may contribute to, accepted contributions.

use std::path::Path;
use std::str::FromStr;

use blindwatch_crypto::sign::VerifyingKey;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the catalog {path} does not exist: run `blindwatch keys init --data-dir DIR` first")]
    Missing { path: String },
    #[error("catalog database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "sequence {sequence} of {table} is not newer than the last accepted ({last}): a replayed or stale contribution"
    )]
    Stale {
        table: String,
        sequence: u64,
        last: u64,
    },
    #[error("the catalog holds a damaged partner key for `{0}`: register the partner again")]
    BadKey(String),
    #[error("sequence {0} is out of range: sequence numbers run from 1 to 2^63 - 1")]
    SequenceRange(u64),
    #[error(transparent)]
    TokenMismatch(Box<TokenMismatch>),
    #[error(
        "{table} already holds {mode} tokens under key {key} (generation {generation}): a rotation needs another key"
    )]
    SameTokens {
        table: String,
        generation: u64,
        mode: String,
        key: String,
    },
    #[error("the catalog holds a damaged value in {0}: restore the catalog from a backup")]
    Damaged(&'static str),
}

/// A contribution's tokens are not those of its dataset's current generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{table} holds its tokens as {current_mode} tokens under key {current_key} (generation {generation}), \
     the contribution's are {mode} tokens under key {key}: tokens under different keys never match. \
     If the token key was rotated, the platform operator starts a new generation with \
     `blindwatch dataset rotate-tokens --dataset {table} --tokens {mode} --key-id {key}` and the partner \
     seals the dataset's history again under the new key; otherwise seal with the dataset's key"
)]
pub struct TokenMismatch {
    pub table: String,
    pub generation: u64,
    pub current_mode: String,
    pub current_key: String,
    pub mode: String,
    pub key: String,
}

/// A dataset's token generation: the mode and key all its current contributions share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGeneration {
    pub table: String,
    /// 1 for the first contribution's tokens, one more for every rotation.
    pub generation: u64,
    pub token_mode: String,
    pub token_key_id: String,
    pub started_at: String,
    /// Who started it: the first contribution's partner, or the operator of a rotation.
    pub started_by: String,
}

#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
}

pub struct PartnerRecord {
    pub name: String,
    pub key: VerifyingKey,
    pub datasets: Vec<String>,
}

/// A contribution about to be recorded.
pub struct NewContribution<'a> {
    pub table: &'a str,
    pub partner: &'a str,
    pub dataset: &'a str,
    pub sequence: u64,
    pub file_path: &'a str,
    pub manifest_path: &'a str,
    pub file_sha256: &'a str,
    pub file_bytes: u64,
    pub row_count: u64,
    pub schema_digest: &'a str,
    pub token_mode: &'a str,
    pub token_key_id: &'a str,
    pub created_at: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    pub id: i64,
    pub table: String,
    pub partner: String,
    pub dataset: String,
    pub sequence: u64,
    /// Relative to the data directory.
    pub file_path: String,
    pub manifest_path: String,
    pub file_sha256: String,
    pub row_count: u64,
    pub schema_digest: String,
    pub token_mode: String,
    pub token_key_id: String,
    /// The token generation it belongs to.
    pub generation: u64,
    pub ingested_at: String,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Catalog {
    /// Opens the catalog; `create` makes a new one (at `keys init`).
    pub async fn open(path: &Path, create: bool) -> Result<Catalog, CatalogError> {
        if !create && !path.is_file() {
            return Err(CatalogError::Missing {
                path: path.display().to_string(),
            });
        }
        // Rollback journal, not WAL: between commands the directory holds only catalog.sqlite,
        // so a refused ingest leaves the data directory byte-for-byte unchanged.
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Delete)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Catalog { pool })
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Changes whenever a contribution is accepted or a token generation starts (both
    /// append-only): an engine compares it to know whether its tables are current.
    pub async fn version(&self) -> Result<(i64, i64), CatalogError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT coalesce(max(id), 0) FROM contributions), \
                    (SELECT count(*) FROM token_generations)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    pub async fn register_partner(
        &self,
        name: &str,
        key: &VerifyingKey,
        datasets: &[String],
    ) -> Result<(), CatalogError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM partners WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO partners (name, public_key, key_id, registered_at) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(key.as_bytes().as_slice())
        .bind(key.id().as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
        for table in datasets {
            sqlx::query("INSERT INTO partner_datasets (partner, table_name) VALUES (?, ?)")
                .bind(name)
                .bind(table)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn partner(&self, name: &str) -> Result<Option<PartnerRecord>, CatalogError> {
        let Some(row) = sqlx::query("SELECT public_key FROM partners WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get("public_key")?;
        let key = VerifyingKey::from_bytes(&bytes)
            .ok_or_else(|| CatalogError::BadKey(name.to_owned()))?;
        let datasets = sqlx::query_scalar(
            "SELECT table_name FROM partner_datasets WHERE partner = ? ORDER BY table_name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(PartnerRecord {
            name: name.to_owned(),
            key,
            datasets,
        }))
    }

    pub async fn partners(&self) -> Result<Vec<String>, CatalogError> {
        Ok(
            sqlx::query_scalar("SELECT name FROM partners ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The highest sequence accepted for a table, over all its generations.
    pub async fn last_sequence(&self, table: &str) -> Result<Option<u64>, CatalogError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM contributions WHERE table_name = ?")
                .bind(table)
                .fetch_one(&self.pool)
                .await?;
        last.map(|s| stored_u64(s, "a sequence")).transpose()
    }

    /// The table's current token generation (None before its first contribution).
    pub async fn token_generation(
        &self,
        table: &str,
    ) -> Result<Option<TokenGeneration>, CatalogError> {
        let mut conn = self.pool.acquire().await?;
        current_generation(&mut conn, table).await
    }

    /// Starts the table's next token generation under `mode` and `key_id` (a key rotation):
    /// from now on only contributions under these tokens are accepted, and only the new
    /// generation's contributions are current. Refused when the table already has them.
    pub async fn start_token_generation(
        &self,
        table: &str,
        mode: &str,
        key_id: &str,
        by: &str,
    ) -> Result<TokenGeneration, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let current = current_generation(&mut tx, table).await?;
        if let Some(c) = &current
            && c.token_mode == mode
            && c.token_key_id == key_id
        {
            return Err(CatalogError::SameTokens {
                table: table.to_owned(),
                generation: c.generation,
                mode: mode.to_owned(),
                key: key_id.to_owned(),
            });
        }
        let next = current.map_or(1, |c| c.generation + 1);
        let started = insert_generation(&mut tx, table, next, mode, key_id, by).await?;
        tx.commit().await?;
        Ok(started)
    }

    /// Records an accepted contribution in the table's current token generation (starting
    /// generation 1 with the first). Inside one transaction it checks again that the
    /// sequence is newer than every accepted one and that the tokens are the generation's,
    /// so two concurrent ingests cannot both succeed.
    pub async fn record_contribution(&self, c: &NewContribution<'_>) -> Result<i64, CatalogError> {
        let sequence =
            i64::try_from(c.sequence).map_err(|_| CatalogError::SequenceRange(c.sequence))?;
        if sequence < 1 {
            return Err(CatalogError::SequenceRange(c.sequence));
        }
        let mut tx = self.pool.begin().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM contributions WHERE table_name = ?")
                .bind(c.table)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(last) = last.filter(|l| *l >= sequence) {
            return Err(CatalogError::Stale {
                table: c.table.to_owned(),
                sequence: c.sequence,
                last: stored_u64(last, "a sequence")?,
            });
        }
        let generation = match current_generation(&mut tx, c.table).await? {
            Some(g) if g.token_mode == c.token_mode && g.token_key_id == c.token_key_id => g,
            Some(g) => {
                return Err(CatalogError::TokenMismatch(Box::new(TokenMismatch {
                    table: c.table.to_owned(),
                    generation: g.generation,
                    current_mode: g.token_mode,
                    current_key: g.token_key_id,
                    mode: c.token_mode.to_owned(),
                    key: c.token_key_id.to_owned(),
                })));
            }
            None => {
                let by = format!("partner:{}", c.partner);
                insert_generation(&mut tx, c.table, 1, c.token_mode, c.token_key_id, &by).await?
            }
        };
        let id = sqlx::query(
            "INSERT INTO contributions (table_name, partner, dataset, sequence, file_path, manifest_path, file_sha256, \
             file_bytes, row_count, schema_digest, token_mode, token_key_id, created_at, ingested_at, generation) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.table)
        .bind(c.partner)
        .bind(c.dataset)
        .bind(sequence)
        .bind(c.file_path)
        .bind(c.manifest_path)
        .bind(c.file_sha256)
        .bind(i64::try_from(c.file_bytes).map_err(|_| CatalogError::Damaged("file_bytes"))?)
        .bind(i64::try_from(c.row_count).map_err(|_| CatalogError::Damaged("row_count"))?)
        .bind(c.schema_digest)
        .bind(c.token_mode)
        .bind(c.token_key_id)
        .bind(c.created_at)
        .bind(now())
        .bind(generation.generation as i64)
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();
        tx.commit().await?;
        Ok(id)
    }

    /// The current contributions' rows of a table — those of its current token generation —
    /// oldest first. (The engine reads all of them for an append contract, the latest for a
    /// replace contract.)
    pub async fn contributions(&self, table: &str) -> Result<Vec<Contribution>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRIBUTION_COLUMNS} FROM contributions c WHERE table_name = ? \
             AND generation = (SELECT max(generation) FROM token_generations g WHERE g.table_name = c.table_name) \
             ORDER BY sequence"
        ))
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(contribution_of).collect()
    }

    /// Every accepted contribution of a table, of every generation, oldest first.
    pub async fn all_contributions(&self, table: &str) -> Result<Vec<Contribution>, CatalogError> {
        let rows = sqlx::query(&format!(
            "SELECT {CONTRIBUTION_COLUMNS} FROM contributions WHERE table_name = ? ORDER BY sequence"
        ))
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(contribution_of).collect()
    }

    /// Whether a stored file (relative to the data directory) belongs to an accepted
    /// contribution, as its Parquet file or its manifest.
    pub async fn is_recorded(&self, relative_path: &str) -> Result<bool, CatalogError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM contributions WHERE file_path = ? OR manifest_path = ?",
        )
        .bind(relative_path)
        .bind(relative_path)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Tables with at least one contribution or a token generation.
    pub async fn tables(&self) -> Result<Vec<String>, CatalogError> {
        Ok(sqlx::query_scalar(
            "SELECT table_name FROM contributions UNION SELECT table_name FROM token_generations ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

const CONTRIBUTION_COLUMNS: &str = "id, table_name, partner, dataset, sequence, file_path, manifest_path, file_sha256, \
     row_count, schema_digest, token_mode, token_key_id, generation, ingested_at";

/// A stored non-negative integer (sequences, counts, generations).
fn stored_u64(v: i64, what: &'static str) -> Result<u64, CatalogError> {
    u64::try_from(v).map_err(|_| CatalogError::Damaged(what))
}

async fn current_generation(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Option<TokenGeneration>, CatalogError> {
    let row = sqlx::query(
        "SELECT generation, token_mode, token_key_id, started_at, started_by FROM token_generations \
         WHERE table_name = ? ORDER BY generation DESC LIMIT 1",
    )
    .bind(table)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|r| -> Result<TokenGeneration, CatalogError> {
        Ok(TokenGeneration {
            table: table.to_owned(),
            generation: stored_u64(r.try_get("generation")?, "a token generation")?,
            token_mode: r.try_get("token_mode")?,
            token_key_id: r.try_get("token_key_id")?,
            started_at: r.try_get("started_at")?,
            started_by: r.try_get("started_by")?,
        })
    })
    .transpose()
}

async fn insert_generation(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    generation: u64,
    mode: &str,
    key_id: &str,
    by: &str,
) -> Result<TokenGeneration, CatalogError> {
    let started_at = now();
    sqlx::query(
        "INSERT INTO token_generations (table_name, generation, token_mode, token_key_id, started_at, started_by) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(table)
    .bind(generation as i64)
    .bind(mode)
    .bind(key_id)
    .bind(&started_at)
    .bind(by)
    .execute(&mut *conn)
    .await?;
    Ok(TokenGeneration {
        table: table.to_owned(),
        generation,
        token_mode: mode.to_owned(),
        token_key_id: key_id.to_owned(),
        started_at,
        started_by: by.to_owned(),
    })
}

fn contribution_of(row: &sqlx::sqlite::SqliteRow) -> Result<Contribution, CatalogError> {
    Ok(Contribution {
        id: row.try_get("id")?,
        table: row.try_get("table_name")?,
        partner: row.try_get("partner")?,
        dataset: row.try_get("dataset")?,
        sequence: stored_u64(row.try_get("sequence")?, "a sequence")?,
        file_path: row.try_get("file_path")?,
        manifest_path: row.try_get("manifest_path")?,
        file_sha256: row.try_get("file_sha256")?,
        row_count: stored_u64(row.try_get("row_count")?, "a row count")?,
        schema_digest: row.try_get("schema_digest")?,
        token_mode: row.try_get("token_mode")?,
        token_key_id: row.try_get("token_key_id")?,
        generation: stored_u64(row.try_get("generation")?, "a token generation")?,
        ingested_at: row.try_get("ingested_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_crypto::sign::SigningKey;

    fn contribution<'a>(sequence: u64, key: &'a str) -> NewContribution<'a> {
        NewContribution {
            table: "hospital.visits",
            partner: "hospital",
            dataset: "visits",
            sequence,
            file_path: "f",
            manifest_path: "m",
            file_sha256: "h",
            file_bytes: 1,
            row_count: 2,
            schema_digest: "s",
            token_mode: "consortium",
            token_key_id: key,
            created_at: "t",
        }
    }

    async fn open() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        assert!(matches!(
            Catalog::open(&path, false).await,
            Err(CatalogError::Missing { .. })
        ));
        let cat = Catalog::open(&path, true).await.unwrap();
        (dir, cat)
    }

    #[tokio::test]
    async fn partners_and_sequences() {
        let (_dir, cat) = open().await;
        let key = SigningKey::generate().unwrap().verifying_key();
        cat.register_partner("hospital", &key, &["hospital.visits".into()])
            .await
            .unwrap();
        let p = cat.partner("hospital").await.unwrap().unwrap();
        assert_eq!(p.key, key);
        assert_eq!(p.datasets, ["hospital.visits"]);
        assert!(cat.partner("tax").await.unwrap().is_none());
        let c = contribution(3, "k");
        cat.record_contribution(&c).await.unwrap();
        assert_eq!(cat.last_sequence("hospital.visits").await.unwrap(), Some(3));
        for older in [3, 2, 1] {
            let replay = cat
                .record_contribution(&contribution(older, "k"))
                .await
                .unwrap_err();
            assert!(
                matches!(replay, CatalogError::Stale { last: 3, .. }),
                "{replay}"
            );
        }
        // Out of range: never stored as a negative number that would sort first.
        for bad in [0, 1 << 63, u64::MAX] {
            assert!(matches!(
                cat.record_contribution(&contribution(bad, "k")).await,
                Err(CatalogError::SequenceRange(_))
            ));
        }
        cat.record_contribution(&contribution(i64::MAX as u64, "k"))
            .await
            .unwrap();
        assert_eq!(
            cat.last_sequence("hospital.visits").await.unwrap(),
            Some(i64::MAX as u64)
        );
        assert_eq!(cat.contributions("hospital.visits").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn tokens_change_only_through_a_new_generation() {
        let (_dir, cat) = open().await;
        assert!(
            cat.token_generation("hospital.visits")
                .await
                .unwrap()
                .is_none()
        );
        cat.record_contribution(&contribution(1, "k1"))
            .await
            .unwrap();
        let g1 = cat
            .token_generation("hospital.visits")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((g1.generation, g1.token_key_id.as_str()), (1, "k1"));
        assert_eq!(g1.started_by, "partner:hospital");
        // Another key, or another mode, is refused and changes nothing.
        let other_key = cat.record_contribution(&contribution(2, "k2")).await;
        assert!(matches!(other_key, Err(CatalogError::TokenMismatch(_))));
        let mut blind = contribution(2, "k1");
        blind.token_mode = "blind";
        assert!(matches!(
            cat.record_contribution(&blind).await,
            Err(CatalogError::TokenMismatch(_))
        ));
        assert_eq!(cat.last_sequence("hospital.visits").await.unwrap(), Some(1));
        cat.record_contribution(&contribution(2, "k1"))
            .await
            .unwrap();

        // A rotation to the same tokens is refused; to new ones starts generation 2.
        assert!(matches!(
            cat.start_token_generation("hospital.visits", "consortium", "k1", "platform")
                .await,
            Err(CatalogError::SameTokens { generation: 1, .. })
        ));
        let g2 = cat
            .start_token_generation("hospital.visits", "consortium", "k2", "platform")
            .await
            .unwrap();
        assert_eq!(g2.generation, 2);
        // The new generation is current and empty; the old one stays on record.
        assert!(
            cat.contributions("hospital.visits")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            cat.all_contributions("hospital.visits")
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(matches!(
            cat.record_contribution(&contribution(3, "k1")).await,
            Err(CatalogError::TokenMismatch(m)) if m.generation == 2
        ));
        // Sequences keep growing across generations.
        assert!(matches!(
            cat.record_contribution(&contribution(2, "k2")).await,
            Err(CatalogError::Stale { .. })
        ));
        cat.record_contribution(&contribution(3, "k2"))
            .await
            .unwrap();
        let current = cat.contributions("hospital.visits").await.unwrap();
        assert_eq!(
            current
                .iter()
                .map(|c| (c.sequence, c.generation))
                .collect::<Vec<_>>(),
            [(3, 2)]
        );
        assert!(cat.is_recorded("f").await.unwrap() && !cat.is_recorded("x").await.unwrap());
    }

    #[tokio::test]
    async fn accepted_contributions_are_never_changed_or_removed() {
        let (_dir, cat) = open().await;
        cat.record_contribution(&contribution(1, "k"))
            .await
            .unwrap();
        for sql in [
            "UPDATE contributions SET file_path = 'other'",
            "DELETE FROM contributions",
        ] {
            assert!(sqlx::query(sql).execute(cat.pool()).await.is_err(), "{sql}");
        }
        assert_eq!(cat.contributions("hospital.visits").await.unwrap().len(), 1);
    }
}
