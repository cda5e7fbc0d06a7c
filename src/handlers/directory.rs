//! Gateways as handlers see them: read from Postgres and cached, so a busy worker does
//! not fetch the same row for every message. A trigger announces every change to a
//! gateway (`LISTEN wallet_gateway_changed`) and the cached copy is dropped at once;
//! entries also expire after a second, in case an announcement is lost.

use crate::store::gateways::{self, Gateway};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The notification channel of the `gateways_changed` trigger (migration 0002).
const CHANNEL: &str = "wallet_gateway_changed";

pub struct GatewayDirectory {
    pool: PgPool,
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Option<Gateway>)>>,
}

impl GatewayDirectory {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The gateway `id` (or its absence) as of at most `ttl` ago.
    pub async fn find(&self, id: &str) -> sqlx::Result<Option<Gateway>> {
        if let Some((read_at, gateway)) = self.lock().get(id)
            && read_at.elapsed() < self.ttl
        {
            return Ok(gateway.clone());
        }
        let gateway = gateways::find(&self.pool, id).await?;
        self.lock()
            .insert(id.to_owned(), (Instant::now(), gateway.clone()));
        Ok(gateway)
    }

    /// Drops what is known of `id`, after this worker changed its circuit state.
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn forget_all(&self) {
        self.lock().clear();
    }

    /// Subscribes to gateway changes; the returned task drops cached copies until
    /// `shutdown`. Fails only if Postgres is unreachable now (entries still expire).
    pub async fn watch(
        self: &std::sync::Arc<Self>,
        shutdown: CancellationToken,
    ) -> sqlx::Result<tokio::task::JoinHandle<()>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let directory = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = listener.try_recv() => next,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Ok(Some(notification)) => directory.forget(notification.payload()),
                    // Reconnecting: announcements may have been missed meanwhile.
                    Ok(None) => directory.forget_all(),
                    Err(_) => {
                        directory.forget_all();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
            }
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Gateway>)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
