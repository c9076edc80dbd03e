//! What every handler shares.

use std::sync::Arc;

use blindwatch_access::{AccessPolicies, Action, Context, Org, Resource};
use blindwatch_alerts::{Alert, AlertStore, Pseudonymizer, tier_rank};
use blindwatch_audit::{AuditLog, AuditRecord};
use blindwatch_crypto::wrap::PlatformPrivateKey;
use blindwatch_engine::{Engine, EngineError};
use blindwatch_query::GateSettings;
use blindwatch_store::{Catalog, DataDir};
use tokio::sync::{Mutex, watch};

use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::stream::Fanout;
use crate::users::{User, UserStore};
use crate::{ServerConfig, ServerError};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub dir: DataDir,
    pub users: UserStore,
    pub alerts: AlertStore,
    pub catalog: Catalog,
    pub access: AccessPolicies,
    pub org: Org,
    pub gate: GateSettings,
    pub pseudonyms: Pseudonymizer,
    pub platform_key: Arc<PlatformPrivateKey>,
    /// One writer per process (the log holds a file lock). Appends fsync; they are short, so
    /// they run inline under the lock rather than on a blocking thread.
    pub audit: Mutex<AuditLog>,
    /// Model runs, uploads and model registration change what the engine sees; one at a time.
    pub writer: Mutex<()>,
    pub metrics: Metrics,
    /// The server's one engine, opened on first use and loaded again when the catalog or
    /// the contracts change; requests work on cheap clones that share its integrity cache.
    engine: Mutex<Option<Engine>>,
    pub limits: crate::Limits,
    pub rate: crate::limits::RateLimiter,
    pub fanout: Fanout,
    pub shutdown: watch::Receiver<bool>,
    /// Changes whenever a user is revoked (by this server or `blindwatch users revoke`):
    /// open streams then check that their caller is still active.
    pub revocations: watch::Receiver<i64>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How often revocations made by other processes are looked for.
const REVOCATION_POLL: std::time::Duration = std::time::Duration::from_millis(400);

/// Watches the users' revocation count until shutdown.
async fn watch_revocations(
    users: UserStore,
    mut shutdown: watch::Receiver<bool>,
) -> Result<watch::Receiver<i64>, crate::users::UserError> {
    let (tx, rx) = watch::channel(users.revocations().await?);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REVOCATION_POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => match users.revocations().await {
                    Ok(n) => {
                        tx.send_if_modified(|old| std::mem::replace(old, n) != n);
                    }
                    Err(e) => tracing::warn!(error = %e, "could not read revocations"),
                },
            }
        }
    });
    Ok(rx)
}

fn start(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::Start(format!("{what}: {e}"))
}

impl AppState {
    pub async fn open(
        config: &ServerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<AppState, ServerError> {
        let dir = DataDir::new(&config.data_dir);
        if !dir.is_initialised() {
            return Err(ServerError::NotInitialised(
                config.data_dir.display().to_string(),
            ));
        }
        let access =
            AccessPolicies::load(&dir.policies_dir()).map_err(|e| start("access policies", e))?;
        let org = Org::load(&dir.policies_dir()).map_err(|e| start("organisation", e))?;
        let gate = GateSettings::load(&dir.policies_dir().join("privacy.toml"))
            .map_err(|e| start("privacy settings", e))?;
        let pseudonyms =
            Pseudonymizer::read(&dir.deployment_key()).map_err(|e| start("deployment key", e))?;
        let platform_key = Arc::new(
            PlatformPrivateKey::read(&dir.platform_private_key())
                .map_err(|e| start("platform key", e))?,
        );
        let audit = dir
            .open_audit_log()
            .map_err(|e| start("audit log (is another blindwatch process using it?)", e))?;
        // The log's lock makes this the directory's only writer: staging left by a killed
        // process can go.
        blindwatch_ingest::sweep_staging(&dir, &audit)
            .map_err(|e| start("clearing the staging area tmp/", e))?;
        let users = UserStore::connect(&dir.users_database(config.postgres.as_ref()))
            .await
            .map_err(|e| start("users", e))?;
        let alerts = AlertStore::connect(&dir.alerts_database(config.postgres.as_ref()))
            .await
            .map_err(|e| start("alert store", e))?;
        let catalog = Catalog::open(&dir.catalog_path(), false)
            .await
            .map_err(|e| start("catalog", e))?;
        let fanout = Fanout::new(&alerts)
            .await
            .map_err(|e| start("alert events", e))?;
        let revocations = watch_revocations(users.clone(), shutdown.clone())
            .await
            .map_err(|e| start("users", e))?;
        Ok(AppState(Arc::new(Inner {
            dir,
            users,
            alerts,
            catalog,
            access,
            org,
            gate,
            pseudonyms,
            platform_key,
            audit: Mutex::new(audit),
            writer: Mutex::new(()),
            metrics: Metrics::default(),
            engine: Mutex::new(None),
            limits: config.limits.clone(),
            rate: crate::limits::RateLimiter::new(&config.limits),
            fanout,
            shutdown,
            revocations,
        })))
    }

    /// The engine, current with the catalog and the contracts (a contribution accepted or a
    /// contract changed, by this server or another process, is seen by the next request).
    pub async fn engine(&self) -> Result<Engine, EngineError> {
        let mut slot = self.engine.lock().await;
        // Taken out while refreshed: a refresh that fails leaves nothing behind, and the
        // next request opens the engine afresh.
        let engine = match slot.take() {
            Some(mut engine) => {
                engine.refresh_if_changed().await?;
                engine
            }
            None => Engine::open(&self.dir).await?,
        };
        *slot = Some(engine.clone());
        Ok(engine)
    }

    pub async fn close(&self) {
        if let Err(e) = self.audit.lock().await.checkpoint() {
            tracing::error!(error = %e, "final audit checkpoint failed");
        }
        self.alerts.clone().close().await;
        self.users.clone().close().await;
        self.catalog.clone().close().await;
    }

    /// Appends audit records and signs a checkpoint; a failure refuses the request.
    pub async fn audit(&self, records: Vec<AuditRecord>) -> Result<(), Problem> {
        let mut log = self.audit.lock().await;
        for r in &records {
            log.append(r).map_err(|e| Problem::internal(&e))?;
        }
        log.checkpoint().map_err(|e| Problem::internal(&e))?;
        Ok(())
    }

    /// Asks the access policies; `Err(403)` when they say no.
    pub fn authorize(
        &self,
        user: &User,
        action: Action,
        resource: &Resource,
        context: &Context,
    ) -> Result<(), Problem> {
        let principal = user
            .access_principal(&self.org)
            .ok_or_else(Problem::forbidden)?;
        if self
            .access
            .decide(&principal, action, resource, context)
            .allowed
        {
            Ok(())
        } else {
            Err(Problem::forbidden())
        }
    }

    /// The access-policy resource of an alert; None for a station the org file lacks.
    pub fn alert_resource(&self, alert: &Alert) -> Option<Resource> {
        let county = self.org.county_of(&alert.station)?;
        Some(Resource::Alert {
            id: alert.id.clone(),
            station: alert.station.clone(),
            county: county.to_owned(),
            tier: tier_rank(alert.tier),
            model: alert.model.clone(),
        })
    }

    /// Whether `user` may read `alert` (no error body: used to filter lists and streams).
    pub fn may_read_alert(&self, user: &User, alert: &Alert) -> bool {
        self.alert_resource(alert).is_some_and(|r| {
            self.authorize(user, Action::ReadAlert, &r, &Context::default())
                .is_ok()
        })
    }
}
