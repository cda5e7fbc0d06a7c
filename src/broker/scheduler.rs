//! The delayed-retry scheduler (docs/operations.md, retries): republishes the messages
//! whose retry is due from Postgres to this worker's own work queue, and deletes their
//! rows only once the broker confirmed them. While the broker is in trouble the rows
//! simply stay and it tries again with backoff: nothing waits in the broker, so a
//! waiting retry survives the loss of any node, or of the whole broker.
//!
//! It wakes at the earliest due time, but at least every [`POLL`]: other workers write
//! rows too, and retry delays of a second or more make that precision enough.

use super::publish::{PublishError, check, confirmed};
use crate::crypto::Keyring;
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::store::delayed::{self, Due};
use lapin::Channel;
use lapin::options::BasicPublishOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest the scheduler sleeps between two looks at the table.
pub const POLL: Duration = Duration::from_millis(500);
/// Rows republished per transaction.
const BATCH: i64 = 200;

/// Runs on `channel` (in confirm mode) until `stop` is cancelled or the channel is gone
/// (the session then ends, and the next one starts a new scheduler).
pub async fn run(
    pool: PgPool,
    keys: Keyring,
    channel: Channel,
    queue: String,
    stop: CancellationToken,
) {
    let mut waits = trouble_backoff();
    while !stop.is_cancelled() && channel.status().connected() {
        let pause = match republish_due(&pool, &keys, &channel, &queue).await {
            Ok(moved) if moved as i64 == BATCH => Duration::ZERO,
            Ok(_) => {
                waits = trouble_backoff();
                until_next(&pool).await
            }
            Err(err) => {
                let delay = waits.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    error = format!("{err:#}"),
                    delay_ms = delay.as_millis() as u64,
                    "cannot republish due retries; they stay in the database"
                );
                delay
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {}
        }
    }
}

/// One batch: lock due rows, publish each, await the confirms, delete what the
/// broker took and commit. Returns how many rows it republished.
async fn republish_due(
    pool: &PgPool,
    keys: &Keyring,
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let due = delayed::due(&mut tx, keys, BATCH).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let taken = publish_all(channel, queue, &due).await;
    let failed = due.len() - taken.len();
    delayed::delete(&mut tx, &taken).await?;
    tx.commit().await?;
    tracing::debug!(republished = taken.len(), "due retries republished");
    if failed > 0 {
        anyhow::bail!(
            "the broker did not take {failed} of {} due retries",
            due.len()
        );
    }
    Ok(taken.len())
}

/// Publishes every message, then awaits each confirm; returns the rows the broker took.
async fn publish_all(channel: &Channel, queue: &str, due: &[Due]) -> Vec<String> {
    let mut confirms = Vec::with_capacity(due.len());
    for message in due {
        let published = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &message.body,
                message.properties.clone(),
            )
            .await;
        confirms.push(published);
    }
    let mut taken = Vec::with_capacity(due.len());
    for (message, published) in due.iter().zip(confirms) {
        let landed = match published {
            Ok(confirm) => confirmed(confirm).await.and_then(|c| check(c, queue)),
            Err(err) => Err(PublishError::from(err)),
        };
        match landed {
            Ok(()) => taken.push(message.id.clone()),
            Err(err) => tracing::debug!(error = %ErrorChain(&err), "a due retry was not taken"),
        }
    }
    taken
}

/// How long to sleep before the next look, and the waiting-retries gauge on the way.
async fn until_next(pool: &PgPool) -> Duration {
    match delayed::outlook(pool).await {
        Ok((next, waiting)) => {
            metrics::gauge!(m::DELAYED).set(waiting as f64);
            next.map_or(POLL, |next| next.min(POLL))
        }
        Err(err) => {
            tracing::warn!(
                error = %ErrorChain(&err),
                "cannot read the delayed retries"
            );
            POLL
        }
    }
}

fn trouble_backoff() -> backon::ExponentialBackoff {
    crate::backoff::endless(Duration::from_millis(200), Duration::from_secs(5))
}
