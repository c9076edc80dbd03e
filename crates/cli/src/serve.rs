//! `blindwatch serve` and `blindwatch users`.

use std::path::Path;

use anyhow::{Context, bail};
use blindwatch_access::Org;
use blindwatch_store::{DataDir, PostgresUrl};
use blindwatch_users::{NewUser, Role, UserStore};

pub struct ServeArgs<'a> {
    pub data_dir: &'a Path,
    pub listen: &'a str,
    pub postgres: Option<PostgresUrl>,
    pub no_scheduler: bool,
    pub as_of: Option<chrono::NaiveDate>,
    pub max_upload_mib: usize,
}

pub async fn serve(a: &ServeArgs<'_>) -> anyhow::Result<()> {
    let mut config =
        blindwatch_server::ServerConfig::new(a.data_dir.to_owned(), a.listen.to_owned());
    config.scheduler = !a.no_scheduler;
    config.as_of = a.as_of;
    config.max_upload_bytes = a.max_upload_mib.saturating_mul(1024 * 1024);
    config.postgres = a.postgres.clone();
    blindwatch_server::serve(config, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

async fn open_users(dir: &DataDir, postgres: Option<&PostgresUrl>) -> anyhow::Result<UserStore> {
    if !dir.is_initialised() {
        bail!(
            "{} is not a platform data directory: run `blindwatch keys init --data-dir {}` first",
            dir.root().display(),
            dir.root().display()
        );
    }
    Ok(UserStore::connect(&dir.users_database(postgres)).await?)
}

pub struct AddUser<'a> {
    pub data_dir: &'a Path,
    pub postgres: Option<&'a PostgresUrl>,
    pub name: &'a str,
    pub role: &'a str,
    pub station: Option<&'a str>,
    pub duty: bool,
}

/// Adds a user; the bearer token is printed once, alone on the last line of standard output.
pub async fn users_add(a: &AddUser<'_>) -> anyhow::Result<()> {
    let dir = DataDir::new(a.data_dir);
    let users = open_users(&dir, a.postgres).await?;
    let org = Org::load(&dir.policies_dir())?;
    let role: Role = a.role.parse()?;
    let (user, token) = users
        .add(
            &NewUser {
                name: a.name,
                role,
                station: a.station,
                duty: a.duty,
            },
            &org,
        )
        .await?;
    users.close().await;
    println!(
        "added {} (id {}); its API token follows, shown only this once:",
        user.principal_name(),
        user.id
    );
    println!("{}", token.expose());
    Ok(())
}

pub async fn users_list(data_dir: &Path, postgres: Option<&PostgresUrl>) -> anyhow::Result<()> {
    let users = open_users(&DataDir::new(data_dir), postgres).await?;
    for u in users.list().await? {
        println!(
            "{:>4}  {}{}",
            u.id,
            u.principal_name(),
            if u.duty { " (county duty)" } else { "" }
        );
    }
    Ok(())
}

pub async fn users_revoke(
    data_dir: &Path,
    postgres: Option<&PostgresUrl>,
    role: &str,
    name: &str,
) -> anyhow::Result<()> {
    let users = open_users(&DataDir::new(data_dir), postgres).await?;
    let role: Role = role.parse()?;
    let revoked = users
        .revoke(role, name)
        .await
        .context("revoking the user")?;
    if !revoked {
        bail!("no active {} named `{name}`", role.as_str());
    }
    println!(
        "revoked {}:{name}; its token no longer works",
        role.as_str()
    );
    Ok(())
}
