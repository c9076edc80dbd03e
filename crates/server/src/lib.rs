//! The platform server: partners upload sealed contributions, officers work their
//! station's alerts (with a live stream), specialists check, register and run models and ask
//! gated queries. Every route authenticates a bearer token and asks the Cedar access
//! policies; every access is audited; errors are RFC 9457 problem details. The officer
//! console (a page built into the binary) is served at `/` and uses the same API.
//!
//! State lives in the platform data directory (catalog, alert store, users, audit log), so a
//! restart loses nothing that was acknowledged: a response is sent only after its change
//! is committed and audited.

mod auth;
mod console;
mod limits;
mod metrics;
mod openapi;
mod problem;
mod reveal;
mod routes;
mod scheduler;
mod state;
mod stream;
/// Users live in their own crate (the CLI manages them without the server).
pub use blindwatch_users as users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use blindwatch_net::{NetError, ServeOptions};
pub use limits::Limits;
pub use problem::Problem;
pub use state::AppState;

/// The HTTP application over `state` (what [`serve`] serves), for callers that drive it
/// without a socket (tests, with `tower::ServiceExt::oneshot`).
pub fn app(state: AppState, max_upload_bytes: usize) -> axum::Router {
    routes::router(state, max_upload_bytes)
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "{0} is not a platform data directory: run `blindwatch keys init --data-dir DIR` first"
    )]
    NotInitialised(String),
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Start(String),
    #[error("the server stopped with an error: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Net(#[from] NetError),
}

/// How to run the server.
#[derive(Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: String,
    /// Largest accepted upload (Parquet file plus manifest), bytes.
    pub max_upload_bytes: usize,
    /// Run registered models on their schedules.
    pub scheduler: bool,
    /// What `current_date` means for scheduled runs (a replay or a synthetic city); None: now.
    pub as_of: Option<chrono::NaiveDate>,
    /// The alert store and users in PostgreSQL; None: SQLite files in the data directory.
    pub postgres: Option<blindwatch_store::PostgresUrl>,
    /// TLS, header and body deadlines, the connection cap, plain HTTP off loopback.
    pub net: ServeOptions,
    /// Per-user request rate, query time and memory.
    pub limits: Limits,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf, listen: String) -> ServerConfig {
        ServerConfig {
            data_dir,
            listen,
            max_upload_bytes: 512 * 1024 * 1024,
            scheduler: true,
            as_of: None,
            postgres: None,
            net: ServeOptions::default(),
            limits: Limits::default(),
        }
    }
}

/// Serves until `shutdown` resolves, then drains open requests and streams, checkpoints the
/// audit log and closes the stores.
pub async fn serve(
    config: ServerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ServerError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr().map_err(ServerError::Serve)?;
    // Refused before anything is opened: plain HTTP off loopback is a configuration error.
    if config.net.tls.is_none() && !local.ip().is_loopback() && !config.net.allow_plain_http {
        return Err(NetError::PlainHttp { addr: local }.into());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = AppState::open(&config, stop_rx.clone()).await?;
    tracing::info!(%local, "blindwatch server listening");
    // Tests and scripts read the bound address from here (useful with port 0).
    let scheme = if config.net.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("listening on {scheme}://{local}");

    let scheduler = config
        .scheduler
        .then(|| tokio::spawn(scheduler::run(state.clone(), config.as_of, stop_rx.clone())));
    let app = routes::router(state.clone(), config.max_upload_bytes);
    let stop_streams = stop_tx.clone();
    blindwatch_net::serve(listener, app, config.net.clone(), async move {
        shutdown.await;
        tracing::info!("shutting down: draining requests");
        let _ = stop_streams.send(true);
    })
    .await?;
    let _ = stop_tx.send(true);
    if let Some(s) = scheduler {
        let _ = tokio::time::timeout(Duration::from_secs(30), s).await;
    }
    state.close().await;
    tracing::info!("stopped");
    Ok(())
}
