//! A token authority running inside the current process, on a loopback port, with its own
//! runtime thread: for the demo, tests and benchmarks. It speaks the same HTTP as
//! `blindwatch tokens serve`, so partners use the same transport.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use blindwatch_audit::AuditLog;
use blindwatch_crypto::KeyId;
use blindwatch_crypto::blind::AuthorityKey;
use blindwatch_crypto::sign::VerifyingKey;

use crate::AuthorityError;
use crate::policy::Quotas;
use crate::server::{self, Authority};

pub struct LocalAuthority {
    url: String,
    authority: Arc<Authority>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl LocalAuthority {
    /// Starts an authority on `127.0.0.1` (a free port) with `key`, `quotas` and,
    /// optionally, an audit log of its own (one entry per evaluated batch).
    pub fn start(
        key: AuthorityKey,
        quotas: Quotas,
        audit: Option<AuditLog>,
    ) -> Result<LocalAuthority, AuthorityError> {
        let authority = Arc::new(Authority::new(key, quotas, BTreeMap::new(), audit)?);
        LocalAuthority::serve(authority)
    }

    /// Serves an authority that is already set up.
    pub fn serve(authority: Arc<Authority>) -> Result<LocalAuthority, AuthorityError> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(AuthorityError::Listen)?;
        listener
            .set_nonblocking(true)
            .map_err(AuthorityError::Listen)?;
        let addr = listener.local_addr().map_err(AuthorityError::Listen)?;
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
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    server::serve(listener, served, async {
                        let _ = stopped.await;
                    })
                    .await
                })
            })
            .map_err(AuthorityError::Listen)?;
        tracing::info!(%addr, key_id = %authority.key_id(), "local token authority started");
        Ok(LocalAuthority {
            url: format!("http://{addr}"),
            authority,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The base URL partners use (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The OPRF key's id: what blind packages record in their manifests.
    pub fn key_id(&self) -> &KeyId {
        self.authority.key_id()
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

    /// Stops serving, signs a checkpoint of the audit log and hands it back.
    pub fn shutdown(mut self) -> Result<Option<AuditLog>, AuthorityError> {
        self.stop_thread()?;
        self.authority.take_audit_log()
    }

    fn stop_thread(&mut self) -> Result<(), AuthorityError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(result) => result.map_err(AuthorityError::Listen)?,
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
