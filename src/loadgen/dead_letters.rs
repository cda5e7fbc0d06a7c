//! Counting the dead letters a run caused, without consuming any: queue depths by a
//! passive declare, and a peek that takes messages unacknowledged and hands them all
//! back (a classic queue puts requeued messages back in their place).

use crate::broker::headers;
use anyhow::Context;
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::BTreeMap;

/// Messages looked at, at most, by one peek: a huge backlog is sampled, not copied.
const MAX_PEEK: u32 = 20_000;

/// Dead letters whose `message_id` starts with one of the given prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterCount {
    /// By `x-wallet-error` (`malformed`, `order_not_found`, ...).
    pub by_kind: BTreeMap<String, u64>,
    /// Whether the whole queue was looked at (false past [`MAX_PEEK`] messages).
    pub complete: bool,
}

impl DeadLetterCount {
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

/// Messages ready in `queue` (0 when it does not exist).
pub async fn queue_depth(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let (connection, _node) = crate::broker::connect_any(amqp_url, "loadgen")
        .await
        .context("cannot reach the broker at AMQP_URL")?;
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let depth = match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(declared) => declared.message_count(),
        Err(_) => 0,
    };
    let _ = connection.close(200, "done".into()).await;
    Ok(depth)
}

/// Counts, by kind, the dead letters in `queue` whose id starts with one of `prefixes`.
/// Every message looked at is handed back in its place.
pub async fn count_dead_letters(
    amqp_url: &str,
    queue: &str,
    prefixes: &[&str],
) -> anyhow::Result<DeadLetterCount> {
    let (connection, _node) = crate::broker::connect_any(amqp_url, "loadgen")
        .await
        .context("cannot reach the broker at AMQP_URL")?;
    let channel = connection.create_channel().await?;
    let mut count = DeadLetterCount {
        complete: true,
        ..Default::default()
    };
    let mut last_tag = None;
    for seen in 0.. {
        if seen == MAX_PEEK {
            count.complete = false;
            break;
        }
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .with_context(|| format!("cannot read {queue}"))?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        last_tag = Some(delivery.delivery_tag);
        let properties = &delivery.properties;
        let id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str())
            .unwrap_or("");
        if prefixes.iter().any(|p| id.starts_with(p)) {
            let kind =
                headers::text(properties, headers::ERROR).unwrap_or_else(|| "unknown".into());
            *count.by_kind.entry(kind).or_default() += 1;
        }
    }
    if let Some(tag) = last_tag {
        let back = BasicNackOptions {
            multiple: true,
            requeue: true,
        };
        channel.basic_nack(tag, back).await?;
    }
    let _ = channel.close(200, "peeked".into()).await;
    let _ = connection.close(200, "done".into()).await;
    Ok(count)
}
