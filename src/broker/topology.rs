//! The AMQP topology (docs/interface.md, AMQP topology), declared idempotently at start.
//!
//! Delayed retries use one durable queue per backoff level, `<queue>.retry.<ms>`, with
//! that TTL and the default exchange as dead-letter target routed to `<queue>`: a
//! waiting message sits in the broker, holds no consumer slot, and comes back by itself.
//! Levels are named by their delay, so changing the backoff settings declares new
//! queues instead of clashing with the old ones.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ExchangeKind};

use crate::domain::envelope::INBOUND_TYPES;

/// Redeliveries of one message (crashes, hand-backs) before the broker dead-letters it.
const REDELIVERY_LIMIT: i64 = 50;

/// Names and retry levels derived from the configuration.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    /// Delays in milliseconds: `base * 2^k`, capped at the maximum.
    pub retry_levels: Vec<u64>,
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
            retry_levels: levels,
        }
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.queue)
    }

    pub fn retry_queue(&self, level_ms: u64) -> String {
        format!("{}.retry.{level_ms}", self.queue)
    }

    /// Every queue the topology declares: inbound, dead-letter, and the retry levels.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.queue.clone(), self.dead_letter_queue()];
        queues.extend(self.retry_levels.iter().map(|l| self.retry_queue(*l)));
        queues
    }

    /// The shortest level that waits at least `delay_ms` (the longest if none does).
    pub fn level_for(&self, delay_ms: u64) -> u64 {
        self.retry_levels
            .iter()
            .copied()
            .find(|level| *level >= delay_ms)
            .unwrap_or_else(|| *self.retry_levels.last().expect("at least one level"))
    }

    /// Declares everything; an entity that ops pre-declared with other arguments is
    /// accepted as it is (checked passively) rather than failing the start.
    pub async fn declare(&self, connection: &Connection) -> lapin::Result<()> {
        let channel = connection.create_channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // A message redelivered this often (crash loops: the worker itself never
        // requeues a message forever) goes to the dead-letter queue instead of being
        // dropped, which is what RabbitMQ 4's default limit of 20 would do.
        quorum.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(REDELIVERY_LIMIT),
        );
        quorum.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        quorum.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.dead_letter_queue().as_str().into()),
        );
        declare_queue(connection, &self.queue, quorum).await?;
        for key in INBOUND_TYPES {
            channel
                .queue_bind(
                    self.queue.as_str().into(),
                    self.exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        // Classic: requeued messages keep their position, so `dlq list` never reorders.
        declare_queue(connection, &self.dead_letter_queue(), FieldTable::default()).await?;
        for level in &self.retry_levels {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(*level as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue.as_str().into()),
            );
            declare_queue(connection, &self.retry_queue(*level), args).await?;
        }
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }
}

async fn declare_queue(connection: &Connection, name: &str, args: FieldTable) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    match channel.queue_declare(name.into(), durable, args).await {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(err) if home_node_down(&err) => {
            // A classic queue (dead letters, retry levels) lives on one node of a
            // cluster; while that node is down the queue exists but is unavailable.
            // The worker still consumes from the replicated inbound queue: a retry or
            // dead letter routed there comes back unroutable (mandatory) and the
            // delivery is handed back until the node returns.
            tracing::warn!(queue = name, error = %err, "the queue's node is down; it is unavailable until that node returns");
            Ok(())
        }
        Err(err) => {
            // A mismatch closes the channel; check the queue exists on a fresh one.
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            match channel
                .queue_declare(name.into(), passive, FieldTable::default())
                .await
            {
                Ok(_) => {
                    tracing::warn!(queue = name, error = %err, "queue exists with other arguments; using it as declared");
                    let _ = channel.close(200, "declared".into()).await;
                    Ok(())
                }
                Err(_) => Err(err),
            }
        }
    }
}

/// RabbitMQ's answer to declaring a durable classic queue whose node is down.
fn home_node_down(err: &lapin::Error) -> bool {
    let message = err.to_string();
    message.contains("NOT_FOUND") && message.contains("is down or inaccessible")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_levels_double_from_base_and_stop_at_max() {
        let t = Topology::new("x", "q", 1000, 600_000);
        assert_eq!(t.retry_levels.first(), Some(&1000));
        assert_eq!(t.retry_levels.last(), Some(&600_000));
        assert_eq!(t.retry_levels.len(), 11);
        assert_eq!(t.level_for(1500), 2000);
        assert_eq!(t.level_for(10_000_000), 600_000);
    }
}
