//! The live stream of new and changed alerts (server-sent events).
//!
//! One fan-out: after every change (a model run, an officer's action) the writer publishes
//! the store's new events once to a broadcast channel; each subscriber filters them through
//! the access policies, so a stream carries only what its caller may read. A client that
//! reconnects with `Last-Event-ID` gets what it missed from the store first; a subscriber
//! that falls behind the channel catches up from the store the same way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use blindwatch_alerts::{AlertEvent, AlertStore, AlertStoreError};
use futures::Stream;
use tokio::sync::{Mutex, broadcast};

use crate::auth::Caller;
use crate::problem::Problem;
use crate::state::AppState;
use crate::users::User;

const CHANNEL: usize = 4096;
const PAGE: u32 = 500;

pub struct Fanout {
    tx: broadcast::Sender<Arc<AlertEvent>>,
    /// The last event id sent to the channel.
    published: Mutex<i64>,
}

impl Fanout {
    pub async fn new(alerts: &AlertStore) -> Result<Fanout, AlertStoreError> {
        let (tx, _) = broadcast::channel(CHANNEL);
        Ok(Fanout {
            tx,
            published: Mutex::new(alerts.last_event_id().await?),
        })
    }

    /// Sends the store's events newer than the last published one.
    pub async fn publish(&self, alerts: &AlertStore) {
        let mut last = self.published.lock().await;
        loop {
            let events = match alerts.events_after(*last, PAGE).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "reading alert events for the live stream failed");
                    return;
                }
            };
            let n = events.len();
            for e in events {
                *last = e.id;
                // No subscriber is not an error.
                let _ = self.tx.send(Arc::new(e));
            }
            if n < PAGE as usize {
                return;
            }
        }
    }
}

fn visible(state: &AppState, user: &User, e: &AlertEvent) -> bool {
    state.may_read_alert(user, &e.alert)
}

fn sse(e: &AlertEvent) -> Event {
    Event::default()
        .id(e.id.to_string())
        .event("alert")
        .json_data(e)
        .unwrap_or_else(|_| Event::default().comment("unserialisable event skipped"))
}

/// `GET /v1/alerts/stream`
pub async fn stream(
    State(state): State<AppState>,
    Caller(user): Caller,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    // Only officers read alerts; refuse others up front rather than stream nothing forever.
    if user.access_principal(&state.org).is_none() || user.station.is_none() {
        return Err(Problem::forbidden());
    }
    let resume: Option<i64> = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut rx = state.fanout.tx.subscribe();
    let mut cursor = match resume {
        Some(id) => id,
        None => *state.fanout.published.lock().await,
    };
    let mut shutdown = state.shutdown.clone();
    let mut revocations = state.revocations.clone();
    state
        .metrics
        .stream_subscribers
        .fetch_add(1, Ordering::Relaxed);
    let guard = SubscriberGuard(state.clone());

    let events = async_stream::stream! {
        let _guard = guard;
        // Missed events first (a reconnect), straight from the store.
        let mut catch_up = resume.is_some();
        loop {
            if catch_up {
                loop {
                    let page = match state.alerts.events_after(cursor, PAGE).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(error = %e, "live stream catch-up failed");
                            return;
                        }
                    };
                    let n = page.len();
                    for e in page {
                        cursor = e.id;
                        if visible(&state, &user, &e) {
                            state.metrics.stream_events_sent.fetch_add(1, Ordering::Relaxed);
                            yield Ok(sse(&e));
                        }
                    }
                    if n < PAGE as usize {
                        break;
                    }
                }
                catch_up = false;
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                // A revoked caller's stream ends: the check fails closed.
                Ok(()) = revocations.changed() => {
                    if !matches!(state.users.is_active(user.id).await, Ok(true)) {
                        tracing::info!("a revoked caller's live stream ended");
                        return;
                    }
                }
                received = rx.recv() => match received {
                    Ok(e) => {
                        if e.id <= cursor {
                            continue;
                        }
                        cursor = e.id;
                        if visible(&state, &user, &e) {
                            state.metrics.stream_events_sent.fetch_add(1, Ordering::Relaxed);
                            yield Ok(sse(&e));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => catch_up = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    };
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

struct SubscriberGuard(AppState);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0
            .metrics
            .stream_subscribers
            .fetch_sub(1, Ordering::Relaxed);
    }
}
