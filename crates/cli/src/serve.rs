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
    pub limits: &'a LimitArgs,
}

/// `serve`'s transport and its limits; each refusal is an RFC 9457 problem.
#[derive(clap::Args)]
pub struct LimitArgs {
    /// The TLS certificate chain (PEM) clients see; with --tls-key, `serve` speaks HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates issued by this CA (PEM), e.g. for partners (needs TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
    /// Serve plain HTTP on an address that is not loopback (only behind a TLS-terminating
    /// proxy on a trusted network). Without TLS, `serve` refuses any other address.
    #[arg(long)]
    insecure_plain_http: bool,
    /// Connections open at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds a client has for the TLS handshake and each request head (idle keep-alive
    /// connections close after it too).
    #[arg(long, default_value_t = 10)]
    header_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (408 after it).
    #[arg(long, default_value_t = 300)]
    body_timeout_secs: u64,
    /// Requests per second each user may sustain (429 with Retry-After above it).
    #[arg(long, default_value_t = 20.0)]
    rate_per_user: f64,
    /// Requests a user may make at once above the sustained rate.
    #[arg(long, default_value_t = 40)]
    rate_burst: u32,
    /// Seconds a gated query may run before it is cancelled (503 query-timeout).
    #[arg(long, default_value_t = 30)]
    query_timeout_secs: u64,
    /// DataFusion memory pool of one query, MiB (over it: 422, rule execution).
    #[arg(long, default_value_t = 1024)]
    query_memory_mib: usize,
}

pub async fn serve(a: &ServeArgs<'_>) -> anyhow::Result<()> {
    let l = a.limits;
    let mut config =
        blindwatch_server::ServerConfig::new(a.data_dir.to_owned(), a.listen.to_owned());
    config.scheduler = !a.no_scheduler;
    config.as_of = a.as_of;
    config.max_upload_bytes = a.max_upload_mib.saturating_mul(1024 * 1024);
    config.postgres = a.postgres.clone();
    if l.rate_per_user.is_nan() || l.rate_per_user <= 0.0 {
        bail!("--rate-per-user must be above 0");
    }
    config.net = blindwatch_server::ServeOptions {
        tls: match (&l.tls_cert, &l.tls_key) {
            (Some(cert), Some(key)) => Some(blindwatch_net::tls_config(
                cert,
                key,
                l.client_ca.as_deref(),
            )?),
            _ => None,
        },
        header_read_timeout: std::time::Duration::from_secs(l.header_timeout_secs),
        body_read_timeout: std::time::Duration::from_secs(l.body_timeout_secs),
        max_connections: l.max_connections,
        allow_plain_http: l.insecure_plain_http,
        ..blindwatch_server::ServeOptions::default()
    };
    config.limits = blindwatch_server::Limits {
        requests_per_second: l.rate_per_user,
        burst: l.rate_burst,
        query_timeout: std::time::Duration::from_secs(l.query_timeout_secs),
        query_memory_bytes: l.query_memory_mib.saturating_mul(1024 * 1024),
    };
    match blindwatch_server::serve(config, shutdown_signal()).await {
        Err(
            e @ blindwatch_server::ServerError::Net(blindwatch_net::NetError::PlainHttp { .. }),
        ) => {
            bail!(
                "{e}: add --tls-cert FILE --tls-key FILE, listen on 127.0.0.1, or pass --insecure-plain-http"
            )
        }
        r => Ok(r?),
    }
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
