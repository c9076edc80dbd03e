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

    pub async fn last_sequence(&self, table: &str) -> Result<Option<u64>, CatalogError> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM contributions WHERE table_name = ?")
                .bind(table)
                .fetch_one(&self.pool)
                .await?;
        Ok(last.map(|s| s as u64))
    }

    /// Records an accepted contribution; re-checks the sequence inside the transaction so two
    /// concurrent ingests of one sequence cannot both succeed.
    pub async fn record_contribution(&self, c: &NewContribution<'_>) -> Result<i64, CatalogError> {
        let mut tx = self.pool.begin().await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT max(sequence) FROM contributions WHERE table_name = ?")
                .bind(c.table)
                .fetch_one(&mut *tx)
                .await?;
        if let Some(last) = last.filter(|l| *l as u64 >= c.sequence) {
            return Err(CatalogError::Stale {
                table: c.table.to_owned(),
                sequence: c.sequence,
                last: last as u64,
            });
        }
        let id = sqlx::query(
            "INSERT INTO contributions (table_name, partner, dataset, sequence, file_path, manifest_path, file_sha256, \
             file_bytes, row_count, schema_digest, token_mode, token_key_id, created_at, ingested_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.table)
        .bind(c.partner)
        .bind(c.dataset)
        .bind(c.sequence as i64)
        .bind(c.file_path)
        .bind(c.manifest_path)
        .bind(c.file_sha256)
        .bind(c.file_bytes as i64)
        .bind(c.row_count as i64)
        .bind(c.schema_digest)
        .bind(c.token_mode)
        .bind(c.token_key_id)
        .bind(c.created_at)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();
        tx.commit().await?;
        Ok(id)
    }

    /// All accepted contributions of a table, oldest first.
    pub async fn contributions(&self, table: &str) -> Result<Vec<Contribution>, CatalogError> {
        let rows = sqlx::query(
            "SELECT id, table_name, partner, dataset, sequence, file_path, manifest_path, file_sha256, row_count, \
             schema_digest, token_mode, token_key_id, ingested_at FROM contributions WHERE table_name = ? ORDER BY sequence",
        )
        .bind(table)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(contribution_of).collect()
    }

    /// Tables with at least one contribution.
    pub async fn tables(&self) -> Result<Vec<String>, CatalogError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT table_name FROM contributions ORDER BY table_name")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

fn contribution_of(row: &sqlx::sqlite::SqliteRow) -> Result<Contribution, CatalogError> {
    Ok(Contribution {
        id: row.try_get("id")?,
        table: row.try_get("table_name")?,
        partner: row.try_get("partner")?,
        dataset: row.try_get("dataset")?,
        sequence: row.try_get::<i64, _>("sequence")? as u64,
        file_path: row.try_get("file_path")?,
        manifest_path: row.try_get("manifest_path")?,
        file_sha256: row.try_get("file_sha256")?,
        row_count: row.try_get::<i64, _>("row_count")? as u64,
        schema_digest: row.try_get("schema_digest")?,
        token_mode: row.try_get("token_mode")?,
        token_key_id: row.try_get("token_key_id")?,
        ingested_at: row.try_get("ingested_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use blindwatch_crypto::sign::SigningKey;

    #[tokio::test]
    async fn partners_and_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        assert!(matches!(
            Catalog::open(&path, false).await,
            Err(CatalogError::Missing { .. })
        ));
        let cat = Catalog::open(&path, true).await.unwrap();
        let key = SigningKey::generate().unwrap().verifying_key();
        cat.register_partner("hospital", &key, &["hospital.visits".into()])
            .await
            .unwrap();
        let p = cat.partner("hospital").await.unwrap().unwrap();
        assert_eq!(p.key, key);
        assert_eq!(p.datasets, ["hospital.visits"]);
        assert!(cat.partner("tax").await.unwrap().is_none());
        let c = NewContribution {
            table: "hospital.visits",
            partner: "hospital",
            dataset: "visits",
            sequence: 3,
            file_path: "f",
            manifest_path: "m",
            file_sha256: "h",
            file_bytes: 1,
            row_count: 2,
            schema_digest: "s",
            token_mode: "consortium",
            token_key_id: "k",
            created_at: "t",
        };
        cat.record_contribution(&c).await.unwrap();
        assert_eq!(cat.last_sequence("hospital.visits").await.unwrap(), Some(3));
        let replay = cat.record_contribution(&c).await.unwrap_err();
        assert!(
            matches!(replay, CatalogError::Stale { last: 3, .. }),
            "{replay}"
        );
        assert_eq!(cat.contributions("hospital.visits").await.unwrap().len(), 1);
    }
}
