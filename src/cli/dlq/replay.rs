//! `dlq replay` (docs/operations.md, replay). Batch after batch, the selected dead
//! letters go back into the outbox and are marked replayed in one transaction each
//! ([`crate::store::dead_letters::replay`]); then this command publishes the batch it
//! just committed itself, with confirms, paced by `--rate`, so a replay needs no
//! running worker. Rows a killed replay committed but never published are published
//! by the next replay (it sweeps them first) or by any worker's relay.

use super::{dead_letters, nothing_matched, open};
use crate::broker::{self, relay};
use crate::config::{AmqpArgs, DbArgs};
use crate::crypto::DataKeys;
use crate::crypto::Keyring;
use crate::domain::MessageType;
use crate::store;
use crate::store::audit;
use crate::store::dead_letters::replay::{self, By};
use crate::store::dead_letters::{Cursor, DeadLetter, Filter, query};
use crate::store::outbox::{self, PendingEvent};
use anyhow::{Context, bail};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use std::collections::BTreeSet;
use tokio::time::{Duration, Instant};

/// Dead letters per transaction at most (fewer under a low `--rate`: about a second's
/// worth, so no row waits long between its commit and its publication).
const BATCH: i64 = 500;

/// How the replay runs.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub rate: Option<f64>,
    pub dry_run: bool,
    pub actor: &'a str,
}

/// What the replay did so far.
#[derive(Debug, Default)]
struct Tally {
    replayed: u64,
    not_replayable: u64,
    /// Requested ids seen (bounded by the request).
    ids_seen: BTreeSet<String>,
}

impl Tally {
    fn saw(&mut self, filter: &Filter, letter: &DeadLetter) {
        if let Some(id) = &letter.message_id
            && filter.ids.contains(id)
        {
            self.ids_seen.insert(id.clone());
        }
    }

    /// Prints what a published batch did and counts it.
    fn report(&mut self, filter: &Filter, batch: &replay::Batch) {
        for letter in &batch.replayed {
            self.saw(filter, letter);
            let key = letter.routing_key.as_deref().unwrap_or("-");
            println!("replayed {} to {key}", id_of(letter));
        }
        for letter in &batch.not_replayable {
            self.saw(filter, letter);
            let key = letter.routing_key.as_deref().unwrap_or("(none)");
            eprintln!(
                "not replayed {}: no queue of the worker takes type {key}",
                id_of(letter)
            );
        }
        self.replayed += batch.replayed.len() as u64;
        self.not_replayable += batch.not_replayable.len() as u64;
    }

    fn finish(self, filter: &Filter, dry_run: bool) -> anyhow::Result<()> {
        let (verb, note) = if dry_run {
            ("would replay", " (dry run: nothing changed)")
        } else {
            ("replayed", "")
        };
        let selected = self.replayed + self.not_replayable;
        nothing_matched(filter, selected)?;
        let unknown: Vec<&String> = filter
            .ids
            .iter()
            .filter(|id| !self.ids_seen.contains(*id))
            .collect();
        if !unknown.is_empty() {
            let unknown: Vec<&str> = unknown.iter().map(|id| id.as_str()).collect();
            eprintln!("no dead letter with message id {}", unknown.join(", "));
        }
        println!(
            "{verb} {} of {}{note}",
            self.replayed,
            dead_letters(selected)
        );
        if self.not_replayable > 0 && !dry_run {
            bail!(
                "{} could not be replayed (no queue of the worker takes their type) and stay in the store",
                dead_letters(self.not_replayable)
            );
        }
        Ok(())
    }
}

pub async fn replay(
    db: &DbArgs,
    amqp: &AmqpArgs,
    filter: &Filter,
    run: Run<'_>,
) -> anyhow::Result<()> {
    let pool = open(db).await?;
    if run.dry_run {
        return dry_run(&pool, &super::keys()?, filter).await;
    }
    let keys = store::keys::keyring(&pool, super::keys()?).await?;
    let (connection, _node) = broker::connect_any(&amqp.amqp_url, "dlq")
        .await
        .context("cannot reach RabbitMQ at AMQP_URL")?;
    let replayed = replay_on(&pool, &keys, &connection, amqp, filter, run).await;
    let _ = connection.close(200, "done".into()).await;
    replayed
}

async fn replay_on(
    pool: &PgPool,
    keys: &Keyring,
    connection: &Connection,
    amqp: &AmqpArgs,
    filter: &Filter,
    run: Run<'_>,
) -> anyhow::Result<()> {
    let channel = publisher(connection, &amqp.queue).await?;
    // What an earlier replay committed and never published goes first.
    relay::sweep_stale(pool, keys, &channel, &amqp.exchange)
        .await
        .context("cannot publish what an earlier replay left in the outbox")?;
    let target = serde_json::to_value(filter)?;
    let audit_id = audit::open(pool, run.actor, audit::Via::Cli, "dlq.replay", &target).await?;
    let by = By {
        actor: run.actor,
        audit_id,
    };
    let batch_size = run
        .rate
        .map_or(BATCH, |rate| (rate.ceil() as i64).clamp(1, BATCH));
    let mut publisher = Publisher {
        pool,
        channel: &channel,
        exchange: &amqp.exchange,
        pacer: Pacer::new(run.rate),
    };
    let (mut tally, mut cursor) = (Tally::default(), None);
    // While one batch is published, the next one is committed (on the pool's other
    // connection): the database's work and the broker's overlap.
    let mut committed: Option<replay::Batch> = None;
    loop {
        let next = replay::batch(
            pool,
            keys,
            by,
            filter,
            cursor.as_ref(),
            batch_size,
            &MessageType::NAMES,
        );
        let (next, published) = tokio::join!(next, publisher.publish(committed.as_ref()));
        published?;
        if let Some(done) = committed.take() {
            tally.report(filter, &done);
        }
        let next = next.context("cannot replay dead letters")?;
        let Some(at) = next.next else { break };
        cursor = Some(at);
        committed = Some(next);
    }
    audit::finish(pool, audit_id).await?;
    let _ = channel.close(200, "replayed".into()).await;
    tally.finish(filter, false)
}

/// A channel with publisher confirms, once the worker's queue is known to exist: a
/// replay published before it would go nowhere.
async fn publisher(connection: &Connection, queue: &str) -> anyhow::Result<Channel> {
    let check = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    if check
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .is_err()
    {
        bail!("no queue {queue}: a replay goes back to the worker's queue; has the worker run?");
    }
    let _ = check.close(200, "checked".into()).await;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes what this replay committed, paced.
struct Publisher<'a> {
    pool: &'a PgPool,
    channel: &'a Channel,
    exchange: &'a str,
    pacer: Pacer,
}

impl Publisher<'_> {
    /// Publishes the rows of `batch` (those a relay's sweep did not take meanwhile),
    /// then forgets them, holding their locks all along.
    async fn publish(&mut self, batch: Option<&replay::Batch>) -> anyhow::Result<()> {
        let Some(batch) = batch.filter(|b| !b.events.is_empty()) else {
            return Ok(());
        };
        let seqs: Vec<i64> = batch.events.iter().map(|e| e.seq).collect();
        let mut tx = self.pool.begin().await?;
        let published = async {
            let locked = outbox::lock(&mut tx, &seqs).await?;
            let held: Vec<&PendingEvent> = batch
                .events
                .iter()
                .filter(|e| locked.binary_search(&e.seq).is_ok())
                .collect();
            for chunk in held.chunks(self.pacer.chunk()) {
                self.pacer.wait(chunk.len()).await;
                relay::publish_all(self.channel, self.exchange, chunk).await?;
            }
            outbox::delete(&mut tx, &locked).await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        match published {
            Ok(()) => Ok(tx.commit().await?),
            Err(err) => {
                let _ = tx.rollback().await;
                Err(err.context(
                    "replay stopped: what is committed and not yet published stays in the \
                     outbox, for the next replay or a worker to publish",
                ))
            }
        }
    }
}

/// Spaces publications `1/rate` apart on average, in chunks of a tenth of a second.
struct Pacer {
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: Option<f64>) -> Self {
        Self {
            rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    fn chunk(&self) -> usize {
        self.rate.map_or(BATCH as usize, |rate| {
            ((rate / 10.0).ceil() as usize).max(1)
        })
    }

    /// Waits until the next `n` publications are due.
    async fn wait(&mut self, n: usize) {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        self.sent += n as u64;
    }
}

/// Prints what a replay would do, reading page by page; changes nothing.
async fn dry_run(pool: &PgPool, keys: &DataKeys, filter: &Filter) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let (mut tally, mut cursor) = (Tally::default(), None);
    loop {
        let page = query::page(&mut conn, keys, filter, cursor.as_ref(), query::MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor::of(last));
        for letter in &page {
            tally.saw(filter, letter);
            match letter
                .routing_key
                .as_deref()
                .filter(|k| MessageType::NAMES.contains(k))
            {
                Some(key) => {
                    tally.replayed += 1;
                    println!("would replay {} to {key}", id_of(letter));
                }
                None => {
                    tally.not_replayable += 1;
                    eprintln!(
                        "would not replay {}: no queue of the worker takes its type",
                        id_of(letter)
                    );
                }
            }
        }
    }
    tally.finish(filter, true)
}

/// The message id, or the row id (`#42`) of a message without one.
fn id_of(letter: &DeadLetter) -> String {
    letter
        .message_id
        .clone()
        .unwrap_or_else(|| format!("#{}", letter.id))
}
