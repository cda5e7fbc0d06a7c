//! `wallet-worker upgrade-queues` (docs/operations.md, upgrading the queues): moves a
//! deployment whose queues predate the quorum topology (classic `<queue>.retry.<ms>`
//! levels, a classic `<queue>.dlq`, a work queue with other arguments) onto it, with the
//! workers stopped and publishers still publishing, losing nothing.
//!
//! A queue's type and arguments cannot change in place, so each queue is emptied into a
//! quorum holding queue, deleted once empty, declared anew and refilled:
//!
//! 1. the dead letters: the classic `.dlq` into `<queue>.dlq.upgrade`, and back into the
//!    new quorum `.dlq`, body and properties as they were;
//! 2. the work: `<queue>.upgrade` is bound like the work queue first, so what publishers
//!    send meanwhile lands there too; the old retry levels (their expiration dropped:
//!    the retry comes early, which is harmless) and then the work queue are emptied into
//!    it and deleted; the new work queue is declared and bound, the holding queue unbound,
//!    emptied into it and deleted.
//!
//! A retry that must wait again after its early attempt waits in the database like
//! any other.
//!
//! Every move publishes with a confirm before it acks (at least once). A message can so
//! arrive twice; its id makes the second harmless. A queue is deleted only when empty
//! (`if-empty`), and emptied again while publishers keep filling it. Running the command
//! again, after an interruption or on a current topology, finishes the job or does
//! nothing.

use super::headers;
use super::publish::publish_confirmed;
use super::topology::{self, Topology, TopologyError, bind_inbound};
use crate::domain::MessageType;
use anyhow::Context;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// What an upgrade moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Messages of the work queue and the old retry levels.
    pub messages: u64,
    pub dead_letters: u64,
    /// Queues deleted and declared anew.
    pub queues_replaced: u64,
}

/// Brings the queues of `topology` to their current type and arguments.
pub async fn upgrade(connection: &Connection, topology: &Topology) -> anyhow::Result<Upgraded> {
    let mut done = Upgraded::default();
    topology.declare_exchange(connection).await?;
    let mover = Mover::open(connection, &topology.exchange).await?;
    let dlq = topology.dead_letter_queue();
    if differs(connection, &dlq, topology.dead_letter_arguments()).await? {
        let holding = format!("{dlq}.upgrade");
        done.dead_letters = mover
            .replace(&dlq, &holding, Expiration::Keep, false, || async {
                topology::declare_queue(connection, &dlq, topology.dead_letter_arguments()).await
            })
            .await?;
        done.queues_replaced += 1;
    }
    done.messages = upgrade_work(connection, topology, &mover, &mut done).await?;
    topology.declare(connection).await?;
    Ok(done)
}

/// The work queue and the old retry levels (step 2).
async fn upgrade_work(
    connection: &Connection,
    topology: &Topology,
    mover: &Mover<'_>,
    done: &mut Upgraded,
) -> anyhow::Result<u64> {
    let queue = &topology.queue;
    let holding = format!("{queue}.upgrade");
    let replace = differs(connection, queue, topology.work_queue_arguments()).await?
        || exists(connection, &holding).await?;
    // Where the old retry levels go: the holding queue when the work queue is replaced.
    let target = if replace {
        holding.as_str()
    } else {
        queue.as_str()
    };
    if replace {
        declare_holding(connection, topology, &holding).await?;
    }
    let mut moved = 0;
    for level in &topology.legacy_retry_levels {
        let old = topology.legacy_retry_queue(*level);
        if exists(connection, &old).await? {
            moved += mover
                .empty_and_delete(&old, target, Expiration::Drop, false)
                .await?;
        }
    }
    if replace {
        // Publishers now reach the holding queue only: the work queue can be emptied
        // for good (quorum queues cannot be deleted "if empty").
        mover.unbind_all(queue).await?;
        moved += mover
            .replace(queue, &holding, Expiration::Route, true, || {
                topology.declare_work_queue(connection)
            })
            .await?;
        done.queues_replaced += 1;
    }
    Ok(moved)
}

/// `<queue>.upgrade`: quorum, bound like the work queue.
async fn declare_holding(
    connection: &Connection,
    topology: &Topology,
    holding: &str,
) -> anyhow::Result<()> {
    topology::declare_queue(connection, holding, quorum()).await?;
    let channel = connection.create_channel().await?;
    bind_inbound(&channel, holding, &topology.exchange).await?;
    let _ = channel.close(200, "bound".into()).await;
    Ok(())
}

/// Whether `name` exists with other arguments than `args` (a missing queue is declared,
/// and so does not differ).
async fn differs(connection: &Connection, name: &str, args: FieldTable) -> anyhow::Result<bool> {
    match topology::declare_queue(connection, name, args).await {
        Ok(()) => Ok(false),
        Err(TopologyError::Mismatch { .. }) => Ok(true),
        Err(err) => Err(err).with_context(|| format!("cannot check queue {name}")),
    }
}

/// Whether the queue `name` exists (a passive declare, on a channel of its own).
async fn exists(connection: &Connection, name: &str) -> anyhow::Result<bool> {
    Ok(depth(connection, name).await?.is_some())
}

/// Ready messages in `name`; `None` if there is no such queue.
async fn depth(connection: &Connection, name: &str) -> anyhow::Result<Option<u32>> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(queue) => {
            let _ = channel.close(200, "checked".into()).await;
            Ok(Some(queue.message_count()))
        }
        Err(err) if err.to_string().contains("NOT_FOUND") => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot check queue {name}")),
    }
}

/// How a moved message changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiration {
    /// Not at all: dead letters, byte for byte with their properties.
    Keep,
    /// Work: it keeps the routing key it was published with in
    /// `x-wallet-original-routing-key` (it is republished to a queue by name).
    Route,
    /// A retry level's message: its per-message delay is meaningless where it goes.
    Drop,
}

/// Moves messages between queues of one connection.
struct Mover<'a> {
    connection: &'a Connection,
    /// Publishes with confirms.
    publish: Channel,
    /// Where holding queues are bound.
    exchange: &'a str,
}

impl<'a> Mover<'a> {
    async fn open(connection: &'a Connection, exchange: &'a str) -> anyhow::Result<Mover<'a>> {
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            connection,
            publish,
            exchange,
        })
    }

    /// Empties `queue` into `holding` and deletes it, declares it anew with `declare`,
    /// then empties `holding` back into it and deletes `holding`; returns the messages
    /// moved out of `queue`.
    async fn replace<F, Fut>(
        &self,
        queue: &str,
        holding: &str,
        how: Expiration,
        quorum_source: bool,
        declare: F,
    ) -> anyhow::Result<u64>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), TopologyError>>,
    {
        let holding_exists = exists(self.connection, holding).await?;
        if !holding_exists {
            topology::declare_queue(self.connection, holding, quorum()).await?;
        }
        let moved = match depth(self.connection, queue).await? {
            Some(_) => {
                self.empty_and_delete(queue, holding, how, quorum_source)
                    .await?
            }
            None => 0,
        };
        declare().await?;
        self.unbind_all(holding).await?;
        self.empty_and_delete(holding, queue, how, true).await?;
        Ok(moved)
    }

    /// Moves every message of `from` into `to`, then deletes `from` once it is empty,
    /// moving again what arrived meanwhile.
    async fn empty_and_delete(
        &self,
        from: &str,
        to: &str,
        expiration: Expiration,
        quorum: bool,
    ) -> anyhow::Result<u64> {
        let mut moved = 0;
        loop {
            moved += self.empty(from, to, expiration).await?;
            // A quorum queue refuses `if-empty`; those emptied here (holding queues, the
            // old work queue) are unbound first, so nothing reaches them any more.
            let quorum = quorum && depth(self.connection, from).await? == Some(0);
            let channel = self.connection.create_channel().await?;
            let if_empty = QueueDeleteOptions {
                if_empty: !quorum,
                ..Default::default()
            };
            match channel.queue_delete(from.into(), if_empty).await {
                Ok(_) => {
                    tracing::info!(queue = from, moved, "emptied and deleted");
                    return Ok(moved);
                }
                // Not empty any more: a publisher was quicker. Go round again.
                Err(err) if err.to_string().contains("PRECONDITION_FAILED") => {}
                Err(err) => return Err(err).with_context(|| format!("cannot delete {from}")),
            }
        }
    }

    /// Moves the messages of `from` into `to` until `from` has none ready: each is
    /// published with a confirm, then acked.
    async fn empty(&self, from: &str, to: &str, expiration: Expiration) -> anyhow::Result<u64> {
        let channel = self.connection.create_channel().await?;
        let mut moved = 0;
        while let Some(message) = channel
            .basic_get(from.into(), BasicGetOptions { no_ack: false })
            .await?
        {
            let delivery = &message.delivery;
            let properties = &delivery.properties;
            let kept = match expiration {
                Expiration::Keep | Expiration::Route => {
                    properties.expiration().as_ref().map(|e| e.to_string())
                }
                Expiration::Drop => None,
            };
            // A quorum queue adds `x-delivery-count` to every message it hands out
            // (RabbitMQ 3.10 even on a first `basic.get`): it describes this delivery,
            // not the message, and is not carried over.
            let mut changes = vec![(headers::DELIVERY_COUNT, None)];
            let routed = headers::text(properties, headers::ORIGINAL_ROUTING_KEY).is_some();
            if expiration == Expiration::Route && !routed {
                let key = headers::long_string(delivery.routing_key.as_str());
                changes.push((headers::ORIGINAL_ROUTING_KEY, Some(key)));
            }
            let table = headers::with_headers(properties, &changes);
            let copy = headers::rebuild(properties, table, kept);
            publish_confirmed(&self.publish, "", to, &delivery.data, copy, true)
                .await
                .with_context(|| format!("cannot move a message from {from} to {to}"))?;
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await?;
            moved += 1;
        }
        let _ = channel.close(200, "emptied".into()).await;
        Ok(moved)
    }

    /// Unbinds a holding queue from the inbound keys (a binding that is not there is
    /// no error), so publishers' messages go to the new queue only.
    async fn unbind_all(&self, holding: &str) -> anyhow::Result<()> {
        let channel = self.connection.create_channel().await?;
        for key in MessageType::NAMES {
            channel
                .queue_unbind(
                    holding.into(),
                    self.exchange.into(),
                    key.into(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = channel.close(200, "unbound".into()).await;
        Ok(())
    }
}

/// A plain quorum queue (holding queues).
fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    args
}
