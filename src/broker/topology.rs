//! The AMQP topology (docs/interface.md, AMQP topology), declared idempotently at start.
//!
//! Two quorum queues, replicated on every node of a cluster
//! (docs/operations.md, broker trouble):
//!
//! * the work queue `<queue>`, bound to the inbound routing keys; what reaches the
//!   broker's delivery limit is dead-lettered into `<queue>.dlq` with
//!   `x-dead-letter-strategy: at-least-once` (which needs `x-overflow: reject-publish`):
//!   a dead letter leaves the work queue only once the dead-letter queue has it. That
//!   is the last-resort path; the worker dead-letters by publishing with a confirm;
//! * `<queue>.dlq`, the dead letters.
//!
//! Delayed retries wait in the database, not in the broker (docs/operations.md,
//! retries): no queue holds a message that waits.
//!
//! Arguments are pinned: a queue that exists with others is a startup error that names
//! the queue and the difference, because a queue's type and arguments cannot change in
//! place; `wallet-worker upgrade-queues` moves a deployment over
//! (docs/operations.md, upgrading the queues).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use crate::domain::MessageType;

/// Redeliveries of one message (crashes, hand-backs) before the broker dead-letters it.
pub const REDELIVERY_LIMIT: i64 = 50;

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// An entity exists with another type or other arguments: no retry can fix that.
    #[error(
        "{entity} exists with other arguments than this worker declares ({differs}); a queue's \
         type and arguments cannot change in place: stop the workers and run \
         `wallet-worker upgrade-queues` (docs/operations.md, upgrading the queues)"
    )]
    Mismatch { entity: String, differs: String },
    #[error("broker error")]
    Broker(#[from] lapin::Error),
}

/// Names derived from the configuration.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    /// The delays, in milliseconds, of the classic `<queue>.retry.<ms>` queues that
    /// workers before the delayed-retry table declared (`base * 2^k`, capped at the
    /// maximum): what `upgrade-queues` empties and removes.
    pub legacy_retry_levels: Vec<u64>,
}

impl Topology {
    pub fn new(exchange: &str, queue: &str, retry_base_ms: u64, retry_max_ms: u64) -> Self {
        let max = retry_max_ms.max(retry_base_ms);
        let mut levels = Vec::new();
        let mut level = retry_base_ms.max(1);
        while level < max {
            levels.push(level);
            level = level.saturating_mul(2);
        }
        levels.push(max);
        Self {
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            legacy_retry_levels: levels,
        }
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    /// The classic retry queue of a level in the topology of older workers.
    pub fn legacy_retry_queue(&self, level_ms: u64) -> String {
        format!("{}.retry.{level_ms}", self.queue)
    }

    /// Every queue the topology declares: the work queue and the dead-letter queue.
    pub fn queues(&self) -> Vec<String> {
        vec![self.queue.clone(), self.dead_letter_queue()]
    }

    /// The work queue's arguments.
    pub fn work_queue_arguments(&self) -> FieldTable {
        let mut args = quorum_at_least_once(&self.dead_letter_queue());
        // A message redelivered this often (crash loops: the worker itself never
        // requeues a message forever) goes to the dead-letter queue instead of being
        // dropped, which is what RabbitMQ 4's default limit of 20 would do.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(REDELIVERY_LIMIT),
        );
        args
    }

    /// The dead-letter queue's arguments: replicated, nothing more.
    pub fn dead_letter_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args
    }

    /// Declares everything with pinned arguments; see [`TopologyError::Mismatch`].
    pub async fn declare(&self, connection: &Connection) -> Result<(), TopologyError> {
        self.declare_exchange(connection).await?;
        self.declare_work_queue(connection).await?;
        declare_queue(
            connection,
            &self.dead_letter_queue(),
            self.dead_letter_arguments(),
        )
        .await?;
        Ok(())
    }

    pub async fn declare_exchange(&self, connection: &Connection) -> Result<(), TopologyError> {
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let declared = channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await;
        checked(declared, || format!("exchange {}", self.exchange))?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    /// The work queue and its bindings.
    pub async fn declare_work_queue(&self, connection: &Connection) -> Result<(), TopologyError> {
        declare_queue(connection, &self.queue, self.work_queue_arguments()).await?;
        let channel = connection.create_channel().await?;
        bind_inbound(&channel, &self.queue, &self.exchange).await?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}

/// Binds `queue` to every inbound routing key of `exchange`.
pub async fn bind_inbound(channel: &Channel, queue: &str, exchange: &str) -> lapin::Result<()> {
    for key in MessageType::NAMES {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// A quorum queue that dead-letters at least once to `target` through the default
/// exchange.
fn quorum_at_least_once(target: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(target));
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    // At-least-once dead-lettering needs it; nothing here sets a length limit.
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Declares a durable queue with exactly `args`, on a channel of its own (a refusal
/// closes the channel).
pub async fn declare_queue(
    connection: &Connection,
    name: &str,
    args: FieldTable,
) -> Result<(), TopologyError> {
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let declared = channel.queue_declare(name.into(), durable, args).await;
    checked(declared, || format!("queue {name}"))?;
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

/// A refused declaration: a mismatch when the broker says the entity differs.
fn checked<T>(
    declared: lapin::Result<T>,
    entity: impl FnOnce() -> String,
) -> Result<T, TopologyError> {
    declared.map_err(|err| match precondition_failed(&err) {
        Some(differs) => TopologyError::Mismatch {
            entity: entity(),
            differs,
        },
        None => TopologyError::Broker(err),
    })
}

/// RabbitMQ's text when a declaration differs from what exists (`PRECONDITION_FAILED -
/// inequivalent arg 'x-queue-type' for queue ...`), which names the difference.
pub fn precondition_failed(err: &lapin::Error) -> Option<String> {
    let message = err.to_string();
    let at = message.find("PRECONDITION_FAILED")?;
    Some(
        message[at..]
            .trim_start_matches("PRECONDITION_FAILED - ")
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_retry_levels_double_from_base_and_stop_at_max() {
        let t = Topology::new("x", "q", 1000, 600_000);
        assert_eq!(t.legacy_retry_levels.first(), Some(&1000));
        assert_eq!(t.legacy_retry_levels.last(), Some(&600_000));
        assert_eq!(t.legacy_retry_levels.len(), 11);
        assert_eq!(t.legacy_retry_queue(1000), "q.retry.1000");
        assert_eq!(t.queues(), ["q", "q.dlq"]);
    }

    #[test]
    fn both_queues_are_quorum_and_the_work_queue_dead_letters_at_least_once() {
        let t = Topology::new("x", "q", 1000, 2000);
        let text = |args: &FieldTable, key: &str| match args.inner().get(key) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        };
        let work = t.work_queue_arguments();
        assert_eq!(text(&work, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(
            text(&work, "x-dead-letter-strategy").as_deref(),
            Some("at-least-once")
        );
        assert_eq!(text(&work, "x-overflow").as_deref(), Some("reject-publish"));
        assert_eq!(
            text(&work, "x-dead-letter-routing-key").as_deref(),
            Some("q.dlq")
        );
        assert_eq!(
            text(&t.dead_letter_arguments(), "x-queue-type").as_deref(),
            Some("quorum")
        );
    }
}
