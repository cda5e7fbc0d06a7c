//! The outbox relay: publishes committed events with publisher confirms, then deletes
//! them. Woken right after each commit; also sweeps every second for rows left by a
//! crash or by another worker. `FOR UPDATE SKIP LOCKED` keeps two relays apart.

use super::publish::{self, PublishError};
use crate::metrics as m;
use crate::store::outbox;
use futures::future::try_join_all;
use lapin::Channel;
use lapin::options::BasicPublishOptions;
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Events published per transaction.
const BATCH: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Publishes until `stop`, then flushes what is left and returns. A broker error ends
/// the relay (its channel is gone); a database error only pauses it.
pub async fn run(
    pool: PgPool,
    channel: Channel,
    exchange: String,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> Result<(), PublishError> {
    loop {
        match drain(&pool, &channel, &exchange).await {
            Ok(()) => {}
            Err(RelayError::Publish(err)) => return Err(err),
            Err(RelayError::Database(err)) => {
                tracing::warn!(error = %err, "outbox relay cannot read the outbox; retrying");
            }
        }
        if stop.is_cancelled() {
            // Closed here, before its connection is: no error line for a clean stop.
            let _ = channel.close(200, "outbox flushed".into()).await;
            return Ok(());
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if let Ok(backlog) = outbox::backlog(&pool).await {
                    metrics::gauge!(m::OUTBOX_BACKLOG).set(backlog as f64);
                }
            }
            _ = stop.cancelled() => {}
        }
    }
}

/// Publishes batches until the outbox has nothing this relay can lock.
pub async fn drain(pool: &PgPool, channel: &Channel, exchange: &str) -> Result<(), RelayError> {
    while publish_batch(pool, channel, exchange).await? == BATCH as usize {}
    Ok(())
}

/// Publishes one batch; returns how many events it published. The transaction is
/// rolled back explicitly on failure: a dropped one would keep its row locks until its
/// connection is reused, and the rows would be skipped by every relay meanwhile.
async fn publish_batch(
    pool: &PgPool,
    channel: &Channel,
    exchange: &str,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    match publish_locked(&mut tx, channel, exchange).await {
        Ok(published) => {
            if let Err(err) = tx.commit().await {
                // Published but not deleted: they go out again later (at-least-once;
                // events carry their own id for consumers to dedupe).
                tracing::warn!(error = %err, "published events could not be marked; they will be republished");
                return Err(err.into());
            }
            metrics::counter!(m::EVENTS_PUBLISHED).increment(published as u64);
            Ok(published)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

async fn publish_locked(
    tx: &mut Transaction<'_, Postgres>,
    channel: &Channel,
    exchange: &str,
) -> Result<usize, RelayError> {
    let events = outbox::lock_batch(tx, BATCH).await?;
    if events.is_empty() {
        return Ok(0);
    }
    // Publish the whole batch, then wait for all confirms: one round trip, not one each.
    let mut confirms = Vec::with_capacity(events.len());
    for event in &events {
        let mut properties = publish::json_properties(&event.event_id, &event.routing_key);
        if let Some(correlation_id) = &event.correlation_id {
            properties = properties.with_correlation_id(correlation_id.as_str().into());
        }
        let confirm = channel
            .basic_publish(
                exchange.into(),
                event.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &event.body,
                properties,
            )
            .await
            .map_err(PublishError::from)?;
        confirms.push(confirm);
    }
    let confirmations = try_join_all(confirms).await.map_err(PublishError::from)?;
    for (confirmation, event) in confirmations.into_iter().zip(&events) {
        publish::check(confirmation, &event.routing_key)?;
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    outbox::delete(tx, &seqs).await?;
    Ok(events.len())
}
