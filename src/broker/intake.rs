//! The dead-letter intake (docs/operations.md, the dead-letter store): `$WALLET_QUEUE.dlq`
//! is where dead letters arrive — the worker's own, the broker's (a quorum queue's
//! delivery limit) and any other producer's — and the worker moves every one of them
//! into the store.
//!
//! It consumes the queue on a channel of its own with a wide prefetch. Whatever has
//! arrived is one batch ([`MAX_BATCH`] at most): its rows, their failure groups and
//! their `wallet.dead_lettered` events are committed in one transaction, the events go
//! to the relay at once (as the committer's do), and only then is the batch acked with
//! one `multiple` ack. A crash in between redelivers the batch, whose dead letters are
//! already stored: they add nothing and announce nothing again (the dedupe key of
//! [`crate::domain::dead_letter::dedupe_key`]). While the database is away the batch
//! waits, unacked; nothing is ever dropped.

pub mod record;

use crate::crypto::Keyring;
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::store::dead_letters::{NewDeadLetter, ingest};
use crate::store::outbox::PendingEvent;
use futures::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Unacked intake messages the broker hands over at once: batches fill up without a
/// round trip per message, and a million-message backlog streams through.
pub const PREFETCH: u16 = 4000;
/// Dead letters per transaction at most.
pub const MAX_BATCH: usize = 1000;

/// Where the intake stores what it reads, and whom it tells.
#[derive(Clone)]
pub struct Intake {
    pub pool: PgPool,
    /// Seals what is stored.
    pub keys: Keyring,
    /// The relay of this process, which publishes committed events at once.
    pub committed: mpsc::UnboundedSender<Vec<PendingEvent>>,
}

/// Consumes `queue` on `channel` until `stop` (the batch in hand is finished first) or
/// until the channel fails.
pub async fn run(
    channel: Channel,
    queue: &str,
    intake: &Intake,
    stop: CancellationToken,
) -> lapin::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let first = tokio::select! {
            next = consumer.next() => next,
            _ = stop.cancelled() => break,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first?];
        while batch.len() < MAX_BATCH {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery?),
                _ => break,
            }
        }
        let last_tag = batch.last().map_or(0, |d| d.delivery_tag);
        crate::faults::delay("intake.batch").await;
        if !store(intake, letters(batch), &stop).await {
            // Stopping while the database was away: the batch goes back unacked.
            break;
        }
        crate::faults::crash_point("intake.after_commit");
        let multiple = BasicAckOptions { multiple: true };
        channel.basic_ack(last_tag, multiple).await?;
    }
    let _ = channel.close(200, "intake stopped".into()).await;
    Ok(())
}

fn letters(batch: Vec<Delivery>) -> Vec<NewDeadLetter> {
    let now = chrono::Utc::now();
    batch
        .into_iter()
        .map(|delivery| record::record(delivery.data, &delivery.properties, now))
        .collect()
}

/// Stores the batch, waiting out database outages; `false` if `stop` came first.
async fn store(intake: &Intake, letters: Vec<NewDeadLetter>, stop: &CancellationToken) -> bool {
    let mut waits = crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let failed = match ingest::ingest(&intake.pool, &intake.keys, &letters).await {
            Ok(ingested) => {
                for (kind, n) in &ingested.kinds {
                    metrics::counter!(m::DEAD_LETTERS_INGESTED, "kind" => m::dead_letter_kind(kind))
                        .increment(*n);
                }
                tracing::debug!(
                    read = letters.len(),
                    stored = ingested.events.len(),
                    "dead letters ingested"
                );
                if !ingested.events.is_empty() {
                    // A relay gone away leaves them to a sweep.
                    let _ = intake.committed.send(ingested.events);
                }
                return true;
            }
            Err(err) => err,
        };
        let delay = waits.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(
            error = %ErrorChain(&failed),
            delay_ms = delay.as_millis() as u64,
            dead_letters = letters.len(),
            "cannot store dead letters; they wait in the intake queue"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return false,
        }
    }
}
