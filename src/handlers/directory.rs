//! Gateways as handlers see them: read from Postgres and cached, so a busy worker does
//! not fetch the same row for every message. A trigger announces every change to a
//! gateway (`LISTEN wallet_gateway_changed`) and the cached copy is dropped at once;
//! entries also expire after a second, in case an announcement is lost.
//!
//! The cache is bounded ([`MAX_ENTRIES`]) and expired entries are evicted, so a publisher
//! naming endless unknown gateways cannot grow the worker's memory. Concurrent misses of
//! one gateway share one read: a burst of messages does not send a burst of queries.

use crate::crypto::Keyring;
use crate::metrics as m;
use crate::store::gateways::{self, Gateway};
use moka::future::Cache;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The notification channel of the `gateways_changed` trigger (migration 0002).
const CHANNEL: &str = "wallet_gateway_changed";
/// Gateways (known or not) remembered at once. Real deployments have a handful.
pub const MAX_ENTRIES: u64 = 1024;

pub struct GatewayDirectory {
    pool: PgPool,
    /// Opens the gateways' sealed secrets.
    keys: Keyring,
    /// `None` remembers that a gateway does not exist.
    entries: Cache<String, Option<Gateway>>,
}

impl GatewayDirectory {
    pub fn new(pool: PgPool, keys: Keyring, ttl: Duration) -> Self {
        Self {
            pool,
            keys,
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The gateway `id` (or its absence) as of at most `ttl` ago.
    pub async fn find(&self, id: &str) -> sqlx::Result<Option<Gateway>> {
        let read = self
            .entries
            .try_get_with_by_ref(id, read_gateway(&self.pool, &self.keys, id))
            .await;
        match read {
            Ok(gateway) => Ok(gateway),
            // The shared read failed; read once more to hand the caller the error itself
            // (it decides between waiting for the database and giving up).
            Err(_) => read_gateway(&self.pool, &self.keys, id).await,
        }
    }

    /// Drops what is known of `id`, after this worker changed its circuit state.
    pub async fn forget(&self, id: &str) {
        self.entries.invalidate(id).await;
    }

    fn forget_all(&self) {
        self.entries.invalidate_all();
    }

    /// Subscribes to gateway changes; the returned future drops cached copies until
    /// `shutdown`. Fails only if Postgres is unreachable now (entries still expire).
    pub async fn watch(
        self: &std::sync::Arc<Self>,
        shutdown: CancellationToken,
    ) -> sqlx::Result<impl Future<Output = ()> + Send + 'static> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let directory = self.clone();
        Ok(async move {
            loop {
                let next = tokio::select! {
                    next = listener.try_recv() => next,
                    _ = shutdown.cancelled() => return,
                };
                match next {
                    Ok(Some(notification)) => directory.forget(notification.payload()).await,
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
        })
    }
}

/// Reads a gateway and publishes its shared circuit state as this worker last read it:
/// the series exists (at 0) from the first use of a gateway, and a circuit another
/// replica closed reads closed here too.
async fn read_gateway(pool: &PgPool, keys: &Keyring, id: &str) -> sqlx::Result<Option<Gateway>> {
    let gateway = gateways::find(pool, keys, id).await?;
    if let Some(gateway) = &gateway {
        let open = gateway.circuit_open_for(chrono::Utc::now()).is_some();
        metrics::gauge!(m::CIRCUIT_OPEN, "gateway" => gateway.id.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }
    Ok(gateway)
}
