//! Serving an axum [`Router`] to a network that may hold attackers: TLS (rustls with the
//! `ring` provider), a deadline for the TLS handshake and every request head (which also
//! closes idle keep-alive connections), a deadline for every request body, a cap on open
//! connections, plain HTTP only on a loopback address unless explicitly allowed, and a
//! graceful shutdown that drains open requests for a bounded time.
//!
//! `axum::serve` has none of the deadlines or the cap: a client that sends half a request
//! holds a connection (and a file descriptor) for ever. [`serve`] is its replacement for
//! Blindwatch's servers (the token authority now, the platform server later):
//!
//! ```no_run
//! # async fn run(app: axum::Router) -> Result<(), blindwatch_net::NetError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7300").await?;
//! let options = blindwatch_net::ServeOptions {
//!     tls: Some(blindwatch_net::tls_config(
//!         "authority.crt".as_ref(),
//!         "authority.key".as_ref(),
//!         None,
//!     )?),
//!     ..blindwatch_net::ServeOptions::default()
//! };
//! blindwatch_net::serve(listener, app, options, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```
//!
//! A request whose body does not arrive in time fails to read with an error whose source
//! chain holds [`BodyTimeout`] ([`is_body_timeout`] finds it), so a route can answer it
//! with its own refusal format; the connection is closed after that answer. Each request
//! carries `axum::extract::ConnectInfo<SocketAddr>` with the peer's address.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How [`serve`] treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS settings ([`tls_config`]); `None` serves plain HTTP, which [`serve`] refuses on
    /// an address that is not loopback unless `allow_plain_http` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time a client has to finish the TLS handshake, and then to send each request head
    /// once the connection is ready for one (so an idle keep-alive connection is closed
    /// after it too).
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body, from the moment its head arrived.
    pub body_read_timeout: Duration,
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Serve plain HTTP on an address that is not loopback (only behind a TLS-terminating
    /// proxy on a trusted network).
    pub allow_plain_http: bool,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// How long shutdown waits for open requests and streams before dropping them.
    pub drain_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 512,
            allow_plain_http: false,
            max_header_bytes: 16 * 1024,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "refusing to serve plain HTTP on {addr}, which is not a loopback address: give a TLS certificate and key, or allow plain HTTP explicitly (only behind a TLS-terminating proxy on a trusted network)"
    )]
    PlainHttp { addr: SocketAddr },
    #[error("cannot read the {what} {path}: {why}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("the TLS settings cannot be used: {0}")]
    Tls(String),
    #[error("cannot serve: {0}")]
    Io(#[from] std::io::Error),
}

/// The TLS crypto provider of Blindwatch: rustls's `ring` provider.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain, or a set of CA certificates).
pub fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = |why: String| NetError::Pem {
        what,
        path: path.to_owned(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(
    path: &Path,
    what: &'static str,
) -> Result<PrivateKeyDer<'static>, NetError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| NetError::Pem {
        what,
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Server TLS settings from PEM files: the certificate chain and its key, and optionally
/// the CA whose client certificates are required (mutual TLS). TLS 1.2 and 1.3, ring.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, NetError> {
    let chain = read_certificates(cert, "TLS certificate")?;
    let key = read_private_key(key, "TLS private key")?;
    let provider = crypto_provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certificates(ca, "client CA certificate")? {
                roots.add(c).map_err(|e| NetError::Pem {
                    what: "client CA certificate",
                    path: ca.to_owned(),
                    why: e.to_string(),
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| NetError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| NetError::Tls(format!("the certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The error a request body read fails with when the body is not complete in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimeout(pub Duration);

/// Whether `err` or one of its sources is a [`BodyTimeout`].
pub fn is_body_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<BodyTimeout>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets open
/// requests finish for at most `drain_timeout` and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), NetError> {
    let local = listener.local_addr()?;
    if options.tls.is_none() && !local.ip().is_loopback() && !options.allow_plain_http {
        return Err(NetError::PlainHttp { addr: local });
    }
    let acceptor = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting: at the cap, clients queue in the kernel's backlog
        // instead of holding descriptors here.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = RequestService {
            app: app.clone(),
            remote,
            body_read_timeout: options.body_read_timeout,
        };
        let builder = builder.clone();
        let header_timeout = options.header_read_timeout;
        match &acceptor {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = builder.serve_connection(TokioIo::new(tls), service);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%remote, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "open connections did not finish within {} s; dropping them",
            options.drain_timeout.as_secs()
        );
    }
    Ok(())
}

/// One connection's service: the router, with the peer address and a body deadline on
/// every request.
#[derive(Clone)]
struct RequestService {
    app: Router,
    remote: SocketAddr,
    body_read_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for RequestService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let limit = self.body_read_timeout;
        let mut request = request.map(|inner| {
            axum::body::Body::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(limit)),
                limit,
            })
        });
        request.extensions_mut().insert(ConnectInfo(self.remote));
        let mut app = self.app.clone();
        Box::pin(async move { tower_service::Service::call(&mut app, request).await })
    }
}

pub mod problem;
pub mod rate;

pub use rate::RateLimiter;
