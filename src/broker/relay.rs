//! The outbox relay. Events committed by this process arrive from the committer in
//! memory and are published at once, with publisher confirms; only then are their rows
//! deleted (on a connection with `synchronous_commit = off`: a delete lost in a crash
//! only means the event is published again). A sweep every second publishes rows older
//! than a few seconds: those of a crashed process or of a lost broker connection.
//! Publication is at least once; every event carries its own id for consumers to dedupe,
//! and the trace context stored with it as `traceparent` / `tracestate` headers. A
//! replayed dead letter left in the outbox by a `dlq replay` that died is published
//! by the same sweep, with its own properties and headers.
//!
//! A nacked, returned or unconfirmed batch is published again with backoff on the same
//! channel (docs/operations.md, broker trouble): only a channel that is gone ends the
//! relay, and with it the broker session.

use super::publish::{self, PublishError};
use super::{amqp_json, headers};
use crate::crypto::Keyring;
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::store::outbox::{self, PendingEvent};
use backon::Retryable;
use futures::future::try_join_all;
use lapin::Channel;
use lapin::options::BasicPublishOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events published per broker round trip / sweep transaction.
const BATCH: usize = 256;
/// Rows younger than this belong to a live relay; the sweep leaves them alone.
const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Publishes until `stop`, then flushes what was committed and returns. A broker error
/// ends the relay (its channel is gone); events it held stay in the outbox for a sweep.
pub async fn run(
    pool: PgPool,
    keys: Keyring,
    channel: Channel,
    exchange: String,
    committed: &mut mpsc::UnboundedReceiver<Vec<PendingEvent>>,
    stop: CancellationToken,
) -> Result<(), PublishError> {
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some(first) = committed.recv() => {
                let mut events = first;
                while events.len() < BATCH && let Ok(more) = committed.try_recv() {
                    events.extend(more);
                }
                publish_until_confirmed(&pool, &channel, &exchange, &events, &stop).await?;
            }
            _ = sweep.tick() => {
                sweep_stale(&pool, &keys, &channel, &exchange).await?;
                if let Ok(backlog) = outbox::backlog(&pool).await {
                    metrics::gauge!(m::OUTBOX_BACKLOG).set(backlog as f64);
                }
            }
            _ = stop.cancelled() => {
                while let Ok(events) = committed.try_recv() {
                    publish_and_forget(&pool, &channel, &exchange, &events).await?;
                }
                // Closed here, before its connection is: no error line for a clean stop.
                let _ = channel.close(200, "outbox flushed".into()).await;
                return Ok(());
            }
        }
    }
}

/// [`publish_and_forget`], again with backoff while the broker refuses or does not
/// confirm, as long as the channel lives and the relay is not stopping (then the rows
/// stay in the outbox for a sweep).
async fn publish_until_confirmed(
    pool: &PgPool,
    channel: &Channel,
    exchange: &str,
    events: &[PendingEvent],
    stop: &CancellationToken,
) -> Result<(), PublishError> {
    let waits = crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5));
    (|| publish_and_forget(pool, channel, exchange, events))
        .retry(waits)
        .sleep(tokio::time::sleep)
        .when(|_| channel.status().connected() && !stop.is_cancelled())
        .notify(|err, delay| {
            tracing::warn!(
                error = %ErrorChain(err),
                delay_ms = delay.as_millis() as u64,
                "the broker did not take committed events; publishing them again"
            );
        })
        .await
}

/// Publishes `events`, waits for every confirm, then deletes their rows.
pub async fn publish_and_forget(
    pool: &PgPool,
    channel: &Channel,
    exchange: &str,
    events: &[PendingEvent],
) -> Result<(), PublishError> {
    publish_all(channel, exchange, events).await?;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    match pool.acquire().await {
        Ok(mut conn) => {
            if let Err(err) = outbox::delete(&mut conn, &seqs).await {
                tracing::warn!(
                    error = %ErrorChain(&err),
                    "published events stay in the outbox; a sweep republishes them"
                );
            }
        }
        Err(err) => {
            tracing::warn!(
                error = %ErrorChain(&err),
                "published events stay in the outbox; a sweep republishes them"
            );
        }
    }
    Ok(())
}

/// Publishes rows nobody is publishing (see [`STALE_AFTER`]). Database trouble, or a
/// broker that refuses or does not confirm, only postpones the sweep to the next tick;
/// a channel that is gone ends the relay.
pub async fn sweep_stale(
    pool: &PgPool,
    keys: &Keyring,
    channel: &Channel,
    exchange: &str,
) -> Result<(), PublishError> {
    loop {
        match sweep_batch(pool, keys, channel, exchange).await {
            Ok(n) if n == BATCH => continue,
            Ok(_) => return Ok(()),
            Err(RelayError::Publish(err)) if !channel.status().connected() => return Err(err),
            Err(RelayError::Publish(err)) => {
                tracing::warn!(
                    error = %ErrorChain(&err),
                    "outbox sweep could not publish; retrying"
                );
                return Ok(());
            }
            Err(RelayError::Database(err)) => {
                tracing::warn!(
                    error = %ErrorChain(&err),
                    "outbox sweep cannot read the outbox; retrying"
                );
                return Ok(());
            }
        }
    }
}

/// One sweep transaction ([`crate::store::in_transaction`]: rolled back explicitly on
/// failure, so its row locks do not outlive it).
async fn sweep_batch(
    pool: &PgPool,
    keys: &Keyring,
    channel: &Channel,
    exchange: &str,
) -> Result<usize, RelayError> {
    crate::store::in_transaction(pool, async |conn| {
        let events = outbox::lock_stale(conn, keys, STALE_AFTER, BATCH as i64).await?;
        if !events.is_empty() {
            publish_all(channel, exchange, &events).await?;
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            outbox::delete(conn, &seqs).await?;
        }
        Ok::<_, RelayError>(events.len())
    })
    .await
}

/// What a row is published with: an event's properties, or a replayed message's own
/// (docs/operations.md, replay).
fn properties(event: &PendingEvent) -> lapin::BasicProperties {
    if let Some(stored) = &event.properties {
        let headers = amqp_json::headers_from_json(
            event.headers.as_ref().unwrap_or(&serde_json::Value::Null),
        );
        return amqp_json::properties_from_json(stored, headers);
    }
    let mut properties = publish::json_properties(&event.event_id, &event.routing_key);
    if let Some(correlation_id) = &event.correlation_id {
        properties = properties.with_correlation_id(correlation_id.as_str().into());
    }
    headers::with_trace(properties, event.trace().as_ref())
}

/// Publishes the whole batch, then waits for all confirms: one round trip, not one each.
pub async fn publish_all<E: std::borrow::Borrow<PendingEvent>>(
    channel: &Channel,
    exchange: &str,
    events: &[E],
) -> Result<(), PublishError> {
    let mut confirms = Vec::with_capacity(events.len());
    for event in events {
        let event = event.borrow();
        let properties = properties(event);
        let confirm = channel
            .basic_publish(
                exchange.into(),
                event.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &event.body,
                properties,
            )
            .await?;
        confirms.push(confirm);
    }
    let confirmations = try_join_all(confirms.into_iter().map(publish::confirmed)).await?;
    for (confirmation, event) in confirmations.into_iter().zip(events) {
        publish::check(confirmation, &event.borrow().routing_key)?;
    }
    metrics::counter!(m::EVENTS_PUBLISHED).increment(events.len() as u64);
    Ok(())
}
