//! The platform's relational state (the alert store, the server's users) through one sqlx
//! `Any` pool, so the same queries run on both backends: a SQLite file in the data directory
//! by default, PostgreSQL when a `postgres://` URL is given. Queries use `$1`-style
//! placeholders, which both accept. Each store ships migrations per backend; on PostgreSQL
//! each store keeps its tables (and its migration ledger) in a schema of its own.
//!
//! The contribution catalog stays a SQLite file beside the package files it describes: the
//! two are one unit (a package without its catalog row is ignored), and are backed up and
//! moved together.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection, Executor};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error(
        "--database-url must start with postgres:// or postgresql:// (SQLite needs no URL: it is the default, in the data directory)"
    )]
    UnsupportedUrl,
    #[error(
        "the data directory path {0} is not valid UTF-8; move the data directory to a UTF-8 path"
    )]
    NotUtf8Path(String),
    #[error(
        "cannot open the {store} database on {backend}: {source}; check that the database is reachable and the URL's user may create tables"
    )]
    Connect {
        store: &'static str,
        backend: Backend,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the {store} database's schema could not be brought up to date: {source}; it was changed outside blindwatch or by a newer version"
    )]
    Migrate {
        store: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// A PostgreSQL connection URL. It may carry a password, so it is never displayed, logged
/// or serialised, and is wiped from memory when dropped.
#[derive(Clone)]
pub struct PostgresUrl(Zeroizing<String>);

impl PostgresUrl {
    pub fn parse(url: &str) -> Result<PostgresUrl, DatabaseError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(PostgresUrl(Zeroizing::new(url.to_owned())))
        } else {
            Err(DatabaseError::UnsupportedUrl)
        }
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PostgresUrl(<redacted>)")
    }
}

/// Where one store's tables live.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    SqliteFile(PathBuf),
    Postgres {
        url: PostgresUrl,
        /// The store's own schema (e.g. `alerts`, `users`).
        schema: &'static str,
    },
}

impl DatabaseTarget {
    /// `postgres`: None for the SQLite file at `sqlite_file`.
    pub fn new(
        sqlite_file: &Path,
        postgres: Option<&PostgresUrl>,
        schema: &'static str,
    ) -> DatabaseTarget {
        match postgres {
            None => DatabaseTarget::SqliteFile(sqlite_file.to_path_buf()),
            Some(url) => DatabaseTarget::Postgres {
                url: url.clone(),
                schema,
            },
        }
    }
}

/// A store's migrations for each backend (`sqlx::migrate!("./migrations/sqlite")`, ...).
pub struct Migrations {
    /// Names the store in errors ("alert", "users").
    pub store: &'static str,
    pub sqlite: &'static Migrator,
    pub postgres: &'static Migrator,
}

/// An open pool to one store's tables.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL advisory-lock key that serialises this store's writers.
    write_lock: i64,
}

impl Database {
    /// Connects (creating the SQLite file or the PostgreSQL schema if needed) and applies
    /// the store's migrations.
    pub async fn connect(
        target: &DatabaseTarget,
        migrations: &Migrations,
    ) -> Result<Database, DatabaseError> {
        sqlx::any::install_default_drivers();
        let store = migrations.store;
        let (backend, write_lock) = match target {
            DatabaseTarget::SqliteFile(_) => (Backend::Sqlite, 0),
            DatabaseTarget::Postgres { schema, .. } => (Backend::Postgres, lock_key(schema)),
        };
        let connect_error = |source| DatabaseError::Connect {
            store,
            backend,
            source,
        };
        let pool = match target {
            DatabaseTarget::SqliteFile(path) => {
                let url = sqlite_url(path)?;
                let options: AnyConnectOptions = url.parse().map_err(connect_error)?;
                AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    // Rollback journal, as the catalog: between commands only the .sqlite
                    // file exists; every commit is on disk before it is acknowledged.
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = DELETE; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?
            }
            DatabaseTarget::Postgres { url, schema } => {
                let options: AnyConnectOptions = url.0.parse().map_err(connect_error)?;
                // The schema must exist before the pool's connections select it.
                let mut first = sqlx::AnyConnection::connect_with(&options)
                    .await
                    .map_err(connect_error)?;
                first
                    .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                    .await
                    .map_err(connect_error)?;
                first.close().await.map_err(connect_error)?;
                let search_path = format!("SET search_path TO {schema}");
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _| {
                        let search_path = search_path.clone();
                        Box::pin(async move {
                            conn.execute(search_path.as_str()).await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await
                    .map_err(connect_error)?
            }
        };
        let migrator = match backend {
            Backend::Sqlite => migrations.sqlite,
            Backend::Postgres => migrations.postgres,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|source| DatabaseError::Migrate { store, source })?;
        tracing::debug!(store, %backend, "database open");
        Ok(Database {
            pool,
            backend,
            write_lock,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A write transaction that holds the store's write lock from its start, so a model run
    /// and an officer's action (or two processes) queue instead of failing on a lock
    /// upgrade: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on
    /// PostgreSQL.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(self.write_lock)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://` URL of a file, created if missing. The driver percent-decodes the path, so
/// `%`, `?` and `#` in it are encoded.
fn sqlite_url(path: &Path) -> Result<String, DatabaseError> {
    let text = path
        .to_str()
        .ok_or_else(|| DatabaseError::NotUtf8Path(path.display().to_string()))?;
    let mut url = String::from("sqlite://");
    for c in text.chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}

/// A stable advisory-lock key per schema (FNV-1a), so every process agrees on it.
fn lock_key(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn postgres_url_is_never_displayed() {
        let url = PostgresUrl::parse("postgres://bw:s3cret@localhost/bw").unwrap();
        let target = DatabaseTarget::new(Path::new("x"), Some(&url), "alerts");
        assert!(!format!("{target:?}").contains("s3cret"));
        assert!(matches!(
            PostgresUrl::parse("mysql://x"),
            Err(DatabaseError::UnsupportedUrl)
        ));
    }

    #[test]
    fn sqlite_url_encodes_what_the_driver_decodes() {
        assert_eq!(
            sqlite_url(Path::new("/d/a b?%#/alerts.sqlite")).unwrap(),
            "sqlite:///d/a b%3F%25%23/alerts.sqlite?mode=rwc"
        );
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_write_transactions_commit() {
        static SQLITE: Migrator = sqlx::migrate!("./testdata/migrations");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd ?#% name.sqlite");
        let m = Migrations {
            store: "test",
            sqlite: &SQLITE,
            postgres: &SQLITE,
        };
        let db = Database::connect(&DatabaseTarget::new(&path, None, "test"), &m)
            .await
            .unwrap();
        let mut tx = db.begin_write().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind("x")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        db.close().await;
        assert!(path.is_file());
        let db = Database::connect(&DatabaseTarget::new(&path, None, "test"), &m)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
}
