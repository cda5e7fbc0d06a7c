//! One pass over the dead-letter queue: `basic.get` without auto-ack, at most as many
//! messages as the queue held when the pass began, each dropped as soon as its caller
//! is done with it. Releasing the pass (or losing the connection) hands every message
//! not acked back to the broker, in place.
//!
//! The held messages are spread over several channels, a segment of the queue each:
//! RabbitMQ finds the delivery an ack names by walking its channel's unacked messages
//! from the oldest, so acking deep inside one channel holding 10⁵ messages costs 10⁵
//! steps, and a replay or purge of many would be quadratic. A new channel every
//! [`segment`] messages keeps each ack's walk short; requeueing on close puts messages
//! back by their position in the queue, whatever channel held them.

use super::{DeadLetterEntry, DlqError};
use futures::stream::{FuturesOrdered, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{DeliveryTag, FieldTable};
use lapin::{Channel, Connection, ErrorKind};
use std::future::Future;
use std::pin::Pin;

/// `basic.get`s in flight at once: hides the round trip without holding many bodies.
const GETS_IN_FLIGHT: usize = 16;
/// How long a pass waits for the broker to put one channel's messages back.
const WHOLE_AGAIN_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);
/// Channels a pass opens at most (RabbitMQ allows 2047 per connection by default).
const MAX_CHANNELS: u64 = 1000;

/// Messages held per channel: at least 1000, more on a queue deeper than 10⁶.
pub(super) fn segment(depth: u64) -> u64 {
    depth.div_ceil(MAX_CHANNELS).max(1000)
}

/// Where a message read by the pass is held, to ack it there.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tag {
    channel: usize,
    delivery: DeliveryTag,
}

type Get = Pin<Box<dyn Future<Output = (usize, lapin::Result<Option<BasicGetMessage>>)> + Send>>;
type Ack = Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>;

/// A channel on which the dead-letter queue is known to exist, and its ready depth.
pub(super) async fn open(connection: &Connection, queue: &str) -> Result<(Channel, u64), DlqError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(declared) => Ok((channel, declared.message_count().into())),
        Err(err) if is_not_found(&err) => Err(DlqError::Missing(queue.to_owned())),
        Err(err) => Err(err.into()),
    }
}

pub(super) fn is_not_found(err: &lapin::Error) -> bool {
    matches!(err.kind(), ErrorKind::ProtocolError(e) if e.get_id() == 404)
}

/// A pass in progress. Nothing it read is settled unless [`Scan::ack`] says so.
pub(super) struct Scan<'c> {
    connection: &'c Connection,
    /// The segments' channels, in queue order; the last takes the next gets.
    channels: Vec<Channel>,
    queue: String,
    /// Ready dead letters when the pass began.
    initial: u64,
    /// The pass reads no more than these (the initial depth, or a limit), so dead
    /// letters arriving meanwhile cannot keep it going.
    to_read: u64,
    /// Messages held per channel: unbounded for a pass that acks nothing (one channel
    /// hands everything back fastest), [`segment`] for one that removes.
    segment: u64,
    /// Messages each channel holds (read and not acked).
    held: Vec<u64>,
    /// Gets sent so far (answered or not).
    requested: u64,
    /// Dead letters read so far; the next one's 1-based position is `read + 1`.
    read: u64,
    gets: FuturesOrdered<Get>,
    /// Acks sent and not yet known written: awaiting each in turn would queue it behind
    /// the gets in flight, a round trip apiece.
    acks: FuturesUnordered<Ack>,
    /// The first ack that failed.
    ack_error: Option<lapin::Error>,
    exhausted: bool,
}

impl<'c> Scan<'c> {
    /// Begins a pass; `removing` if it will ack (purge, replay).
    pub async fn begin(
        connection: &'c Connection,
        queue: &str,
        removing: bool,
    ) -> Result<Self, DlqError> {
        let (channel, depth) = open(connection, queue).await?;
        Ok(Self {
            connection,
            channels: vec![channel],
            queue: queue.to_owned(),
            initial: depth,
            to_read: depth,
            segment: if removing { segment(depth) } else { u64::MAX },
            held: vec![0],
            requested: 0,
            read: 0,
            gets: FuturesOrdered::new(),
            acks: FuturesUnordered::new(),
            ack_error: None,
            exhausted: false,
        })
    }

    /// Ready dead letters when the pass began.
    pub fn depth(&self) -> u64 {
        self.initial
    }

    /// Reads at most `limit` dead letters in all, fewer gets in flight near the end.
    pub fn limit(&mut self, limit: u64) {
        self.to_read = self.to_read.min(limit);
    }

    /// The next dead letter in queue order, or `None` once the pass has read the
    /// queue's initial depth (or found it empty).
    pub async fn next(&mut self) -> Result<Option<(DeadLetterEntry, Tag)>, DlqError> {
        let segment = self.segment;
        while !self.exhausted && self.requested < self.to_read && self.gets.len() < GETS_IN_FLIGHT {
            if self.requested > 0 && self.requested.is_multiple_of(segment) {
                self.channels.push(self.connection.create_channel().await?);
                self.held.push(0);
            }
            let index = self.channels.len() - 1;
            let channel = self.channels[index].clone();
            let queue = self.queue.clone();
            self.gets.push_back(Box::pin(async move {
                let options = BasicGetOptions { no_ack: false };
                (
                    index,
                    channel.basic_get(queue.as_str().into(), options).await,
                )
            }));
            self.requested += 1;
        }
        self.poll_acks();
        let Some((channel, got)) = self.gets.next().await else {
            return Ok(None);
        };
        match got? {
            Some(message) => {
                self.read += 1;
                self.held[channel] += 1;
                let delivery = message.delivery;
                let tag = Tag {
                    channel,
                    delivery: delivery.delivery_tag,
                };
                let position = usize::try_from(self.read).unwrap_or(usize::MAX);
                Ok(Some((DeadLetterEntry::from_owned(position, delivery), tag)))
            }
            None => {
                // Someone else emptied the queue: the gets still in flight may bring
                // dead letters that arrived since, which the release puts back.
                self.exhausted = true;
                Ok(None)
            }
        }
    }

    /// Settles one dead letter: it leaves the queue for good once [`Scan::settled`]
    /// says so. The ack is sent at once, not waited for.
    pub fn ack(&mut self, tag: Tag) -> Result<(), DlqError> {
        self.held[tag.channel] -= 1;
        let channel = self.channels[tag.channel].clone();
        self.acks.push(Box::pin(async move {
            channel
                .basic_ack(tag.delivery, BasicAckOptions::default())
                .await
        }));
        self.poll_acks();
        match self.ack_error.take() {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// Polls the acks in flight once (which sends new ones), keeping the first error.
    fn poll_acks(&mut self) {
        while let Some(Some(done)) = self.acks.next().now_or_never() {
            if let Err(err) = done {
                self.ack_error.get_or_insert(err);
            }
        }
    }

    /// Waits until every ack was written: then what the caller reports as removed is.
    pub async fn settled(&mut self) -> Result<(), DlqError> {
        while let Some(done) = self.acks.next().await {
            if let Err(err) = done {
                self.ack_error.get_or_insert(err);
            }
        }
        match self.ack_error.take() {
            Some(err) => Err(err.into()),
            None => Ok(()),
        }
    }

    /// Hands back every dead letter read and not acked; a classic queue puts each back
    /// at its old position.
    pub async fn release(mut self) {
        // Answers still in flight are read first, so the close finds no get pending;
        // acks not yet written go out before the close.
        while self.gets.next().await.is_some() {}
        while self.acks.next().await.is_some() {}
        let Ok(check) = self.connection.create_channel().await else {
            return;
        };
        // Last segment first, each once the previous is back: the broker merges a
        // requeue into the queue from its head, so a segment requeued in front of
        // those already back costs its own length, where queue order would cost the
        // length of all that came back before it (quadratic over many segments).
        // (Free functions of the queue's name: a `&self` held across these awaits would
        // make the pass's future require `Scan: Sync`, which its in-flight gets are not.)
        let queue = self.queue.clone();
        let mut expected = ready(&check, &queue).await.unwrap_or(0);
        for (channel, held) in self.channels.iter().zip(&self.held).rev() {
            let _ = channel.close(200, "dead letters handed back".into()).await;
            expected += held;
            wait_for_ready(&check, &queue, expected).await;
        }
        let _ = check.close(200, "checked".into()).await;
    }
}

async fn ready(channel: &Channel, queue: &str) -> lapin::Result<u64> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count().into())
}

/// The broker requeues a closed channel's messages after answering the close: wait
/// until they are back, so the next command (and whoever looks at the queue) sees
/// the queue whole.
async fn wait_for_ready(channel: &Channel, queue: &str, expected: u64) {
    let deadline = tokio::time::Instant::now() + WHOLE_AGAIN_WITHIN;
    loop {
        match ready(channel, queue).await {
            Ok(ready) if ready >= expected => return,
            Ok(ready) if tokio::time::Instant::now() > deadline => {
                tracing::warn!(
                    ready,
                    expected,
                    "the broker has not put every dead letter back yet"
                );
                return;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
            Err(_) => return,
        }
    }
}
