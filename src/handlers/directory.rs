//! Gateways as handlers see them: read from Postgres and cached, so a busy worker does
//! not fetch the same row for every message. A trigger announces every change to a
//! gateway (`LISTEN wallet_gateway_changed`) and the cached copy is dropped at once;
//! entries also expire after a second, in case an announcement is lost.
//!
//! The cache is bounded ([`MAX_ENTRIES`]) and expired entries are evicted, so a publisher
//! naming endless unknown gateways cannot grow the worker's memory.

use crate::store::gateways::{self, Gateway};
use moka::sync::Cache;
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
    /// `None` remembers that a gateway does not exist.
    entries: Cache<String, Option<Gateway>>,
}

impl GatewayDirectory {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self {
            pool,
            entries: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The gateway `id` (or its absence) as of at most `ttl` ago.
    pub async fn find(&self, id: &str) -> sqlx::Result<Option<Gateway>> {
        if let Some(gateway) = self.entries.get(id) {
            return Ok(gateway);
        }
        let gateway = gateways::find(&self.pool, id).await?;
        self.entries.insert(id.to_owned(), gateway.clone());
        Ok(gateway)
    }

    /// Drops what is known of `id`, after this worker changed its circuit state.
    pub fn forget(&self, id: &str) {
        self.entries.invalidate(id);
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
        })
    }
}
