//! API users and their bearer tokens. A token is 32 random bytes (base64url, prefixed
//! `bw_`); the store keeps only its SHA-256, so a copy of the database does not let anyone
//! sign in. Tokens carry 256 bits of entropy, which is why a fast hash (not a password
//! hash) is the right tool.

use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use blindwatch_access::{Org, Principal};
use blindwatch_store::database::{Database, DatabaseError, DatabaseTarget, Migrations};
use chrono::{SecondsFormat, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::Row;
use sqlx::migrate::Migrator;
use zeroize::Zeroizing;

const TOKEN_PREFIX: &str = "bw_";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user database error: {0}; check that the data directory is writable")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("{0}")]
    Invalid(String),
    #[error("an active {role} named `{name}` exists already: revoke it first or pick another name")]
    Duplicate { role: &'static str, name: String },
    #[error("the system random generator failed; try again")]
    Random,
    #[error("the user database holds a damaged record ({0}); restore it from a backup")]
    Damaged(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Officer,
    Specialist,
    Auditor,
    Partner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Specialist => "specialist",
            Role::Auditor => "auditor",
            Role::Partner => "partner",
        }
    }
}

impl FromStr for Role {
    type Err = UserError;
    fn from_str(s: &str) -> Result<Role, UserError> {
        match s {
            "officer" => Ok(Role::Officer),
            "specialist" => Ok(Role::Specialist),
            "auditor" => Ok(Role::Auditor),
            "partner" => Ok(Role::Partner),
            _ => Err(UserError::Invalid(format!(
                "unknown role `{s}`: use officer, specialist, auditor or partner"
            ))),
        }
    }
}

/// A signed-in caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// Officers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station: Option<String>,
    pub duty: bool,
}

impl User {
    /// As written to the audit log and alert history: `officer:li@S03`, `specialist:wang`.
    pub fn principal_name(&self) -> String {
        match &self.station {
            Some(s) => format!("{}:{}@{s}", self.role.as_str(), self.name),
            None => format!("{}:{}", self.role.as_str(), self.name),
        }
    }

    /// The access-policy principal; an officer's county comes from the org file.
    pub fn access_principal(&self, org: &Org) -> Option<Principal> {
        let name = self.name.clone();
        Some(match self.role {
            Role::Officer => {
                let station = self.station.clone()?;
                let county = org.county_of(&station)?.to_owned();
                Principal::Officer {
                    name,
                    station,
                    county,
                    duty: self.duty,
                }
            }
            Role::Specialist => Principal::Specialist { name },
            Role::Auditor => Principal::Auditor { name },
            Role::Partner => Principal::Partner { name },
        })
    }
}

/// A new user's bearer token: shown once, never stored, wiped from memory when dropped.
pub struct IssuedToken(Zeroizing<String>);

impl IssuedToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedToken(..)")
    }
}

/// Who to add.
pub struct NewUser<'a> {
    pub name: &'a str,
    pub role: Role,
    pub station: Option<&'a str>,
    pub duty: bool,
}

#[derive(Clone)]
pub struct UserStore {
    db: Database,
}

fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

impl UserStore {
    /// Opens (creating if needed) the users in the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<UserStore, UserError> {
        UserStore::connect(&DatabaseTarget::SqliteFile(path.to_path_buf())).await
    }

    /// Opens (creating if needed) the users: a SQLite file or a PostgreSQL schema.
    pub async fn connect(target: &DatabaseTarget) -> Result<UserStore, UserError> {
        static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
        let migrations = Migrations {
            store: "users",
            sqlite: &SQLITE,
            postgres: &POSTGRES,
        };
        Ok(UserStore {
            db: Database::connect(target, &migrations).await?,
        })
    }

    pub async fn close(self) {
        self.db.close().await;
    }

    /// Adds a user and returns its token. Officers need a station the org file knows.
    pub async fn add(
        &self,
        new: &NewUser<'_>,
        org: &Org,
    ) -> Result<(User, IssuedToken), UserError> {
        if !valid_name(new.name) {
            return Err(UserError::Invalid(
                "a user name is 1 to 64 ASCII letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        match (new.role, new.station) {
            (Role::Officer, None) => {
                return Err(UserError::Invalid(
                    "an officer needs --station (one of the stations in policies/org.toml)".into(),
                ));
            }
            (Role::Officer, Some(s)) if org.county_of(s).is_none() => {
                return Err(UserError::Invalid(format!(
                    "station `{s}` is not in policies/org.toml"
                )));
            }
            (Role::Officer, Some(_)) => {}
            (_, Some(_)) => {
                return Err(UserError::Invalid(
                    "only officers belong to a station; drop --station".into(),
                ));
            }
            (_, None) if new.duty => {
                return Err(UserError::Invalid(
                    "only officers can be county duty officers; drop --duty".into(),
                ));
            }
            (_, None) => {}
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(secret.as_mut())
            .map_err(|_| UserError::Random)?;
        let token = Zeroizing::new(format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref())
        ));
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let inserted = sqlx::query(
            "INSERT INTO users (name, role, station, duty, token_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(new.name)
        .bind(new.role.as_str())
        .bind(new.station)
        .bind(i64::from(new.duty))
        .bind(token_hash(&token))
        .bind(&now)
        .fetch_one(self.db.pool())
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(UserError::Duplicate {
                    role: new.role.as_str(),
                    name: new.name.to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let user = User {
            id,
            name: new.name.to_owned(),
            role: new.role,
            station: new.station.map(str::to_owned),
            duty: new.duty,
        };
        Ok((user, IssuedToken(token)))
    }

    /// The active user a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, UserError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, name, role, station, duty FROM users WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash(token))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// Revokes the active user `role:name`; returns whether there was one.
    pub async fn revoke(&self, role: Role, name: &str) -> Result<bool, UserError> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let done = sqlx::query(
            "UPDATE users SET revoked_at = $1 WHERE role = $2 AND name = $3 AND revoked_at IS NULL",
        )
        .bind(&now)
        .bind(role.as_str())
        .bind(name)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many users were ever revoked: a number that changes exactly when someone is
    /// revoked, cheap for a server to watch.
    pub async fn revocations(&self) -> Result<i64, UserError> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM users WHERE revoked_at IS NOT NULL")
                .fetch_one(self.db.pool())
                .await?,
        )
    }

    /// Whether the user `id` is still active.
    pub async fn is_active(&self, id: i64) -> Result<bool, UserError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .fetch_one(self.db.pool())
                .await?;
        Ok(n > 0)
    }

    pub async fn list(&self) -> Result<Vec<User>, UserError> {
        let rows = sqlx::query(
            "SELECT id, name, role, station, duty FROM users WHERE revoked_at IS NULL ORDER BY id",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(user_from_row).collect()
    }
}

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<User, UserError> {
    let role: &str = r.try_get("role")?;
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role
            .parse()
            .map_err(|_| UserError::Damaged("a user's role"))?,
        station: r.try_get("station")?,
        duty: r.try_get::<i64, _>("duty")? != 0,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn org() -> Org {
        Org::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")).unwrap()
    }

    #[tokio::test]
    async fn tokens_authenticate_only_their_active_user_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.sqlite");
        let store = UserStore::open(&path).await.unwrap();
        let org = org();
        let (li, token) = store
            .add(
                &NewUser {
                    name: "li",
                    role: Role::Officer,
                    station: Some("S03"),
                    duty: false,
                },
                &org,
            )
            .await
            .unwrap();
        assert!(token.expose().starts_with("bw_"));
        assert_eq!(token.expose().len(), 3 + 43);
        assert_eq!(
            store.authenticate(token.expose()).await.unwrap(),
            Some(li.clone())
        );
        assert_eq!(li.principal_name(), "officer:li@S03");
        assert_eq!(store.authenticate("bw_nope").await.unwrap(), None);
        assert_eq!(store.authenticate("").await.unwrap(), None);

        // Only the hash is on disk.
        store.clone().close().await;
        let bytes = std::fs::read(&path).unwrap();
        let wal = std::fs::read(path.with_extension("sqlite-wal")).unwrap_or_default();
        for b in [&bytes, &wal] {
            assert!(memchr_find(b, token.expose().as_bytes()).is_none());
        }
        let store = UserStore::open(&path).await.unwrap();
        assert!(store.authenticate(token.expose()).await.unwrap().is_some());

        // A duplicate active name is refused; after revoking, the old token is dead.
        let dup = store
            .add(
                &NewUser {
                    name: "li",
                    role: Role::Officer,
                    station: Some("S04"),
                    duty: false,
                },
                &org,
            )
            .await;
        assert!(matches!(dup, Err(UserError::Duplicate { .. })));
        assert!(store.revoke(Role::Officer, "li").await.unwrap());
        assert_eq!(store.authenticate(token.expose()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn officers_need_a_known_station_and_only_officers_have_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = UserStore::open(&dir.path().join("u.sqlite")).await.unwrap();
        let org = org();
        let add = |name: &'static str, role, station, duty| NewUser {
            name,
            role,
            station,
            duty,
        };
        for bad in [
            add("a", Role::Officer, None, false),
            add("b", Role::Officer, Some("S99"), false),
            add("c", Role::Specialist, Some("S01"), false),
            add("d", Role::Auditor, None, true),
            add("", Role::Auditor, None, false),
            add("x y", Role::Auditor, None, false),
        ] {
            assert!(matches!(
                store.add(&bad, &org).await,
                Err(UserError::Invalid(_))
            ));
        }
        assert!(store.list().await.unwrap().is_empty());
    }

    fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }
}
