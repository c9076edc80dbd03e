//! A token authority running inside the current process, on a loopback port, with its own
//! runtime thread: for the demo, tests and benchmarks. It is the same [`Authority`] served
//! the same way as `blindwatch tokens serve`, so partners use the same transport.

use std::sync::Arc;
use std::thread::JoinHandle;

use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::{AuthorityKey, AuthorityPublicKey};
use blindwatch_crypto::sign::VerifyingKey;

use crate::policy::Quotas;
use crate::server::Authority;
use crate::{AuthorityDir, AuthorityError, ServeSettings};

pub struct LocalAuthority {
    url: String,
    authority: Arc<Authority>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), AuthorityError>>>,
}

impl LocalAuthority {
    /// Opens the authority of `dir` ([`Authority::open`]) with `key` and `quotas` and serves
    /// it on `127.0.0.1` (a free port).
    pub fn start(
        dir: AuthorityDir,
        key: AuthorityKey,
        quotas: Quotas,
    ) -> Result<LocalAuthority, AuthorityError> {
        let authority = Arc::new(Authority::open(dir, key, quotas)?);
        LocalAuthority::serve(authority)
    }

    /// Serves an authority that is already set up, over plain HTTP on loopback.
    pub fn serve(authority: Arc<Authority>) -> Result<LocalAuthority, AuthorityError> {
        LocalAuthority::serve_with(authority, ServeSettings::default())
    }

    /// Serves with these settings (TLS, deadlines, connection cap, checkpoint interval).
    pub fn serve_with(
        authority: Arc<Authority>,
        settings: ServeSettings,
    ) -> Result<LocalAuthority, AuthorityError> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(AuthorityError::Listen)?;
        listener
            .set_nonblocking(true)
            .map_err(AuthorityError::Listen)?;
        let addr = listener.local_addr().map_err(AuthorityError::Listen)?;
        let scheme = if settings.net.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("token-authority")
            .enable_all()
            .build()
            .map_err(AuthorityError::Listen)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = authority.clone();
        let thread = std::thread::Builder::new()
            .name("token-authority".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(AuthorityError::Listen)?;
                    crate::serve(listener, served, settings, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .map_err(AuthorityError::Listen)?;
        tracing::info!(%addr, key_id = %authority.key_id(), "local token authority started");
        Ok(LocalAuthority {
            url: format!("{scheme}://{addr}"),
            authority,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL partners use (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The VOPRF key's id: what blind packages record in their manifests.
    pub fn key_id(&self) -> &KeyId {
        self.authority.key_id()
    }

    /// The public key partners pin.
    pub fn public_key(&self) -> &AuthorityPublicKey {
        self.authority.public_key()
    }

    /// Lets a partner ask for evaluations, authenticated by its Ed25519 key (the public half
    /// of the key it signs manifests with).
    pub fn register_partner(
        &self,
        partner: &str,
        key: &VerifyingKey,
    ) -> Result<(), AuthorityError> {
        self.authority.register_partner(partner, key)
    }

    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// Stops serving; the last checkpoint is signed and the ledger written.
    pub fn shutdown(mut self) -> Result<(), AuthorityError> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<(), AuthorityError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(result) => result?,
                Err(_) => return Err(AuthorityError::Crashed),
            }
        }
        Ok(())
    }
}

impl Drop for LocalAuthority {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}
