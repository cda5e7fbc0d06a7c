//! Delayed retries: where a message waits when it cannot be handled now.

use super::headers::{self, ATTEMPTS, ORIGINAL_ROUTING_KEY, PANICS};
use super::publish::{PublishError, publish_confirmed};
use super::topology::Topology;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
use rand::RngExt;
use std::time::Duration;

/// Backoff for delayed retries: `base * 2^(attempt-1)`, capped, with "equal jitter"
/// (a random point in the upper half), so synchronized failures spread out.
pub fn backoff(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
    let ceiling = exp.min(max_ms).max(1);
    let jittered = rand::rng().random_range(ceiling / 2..=ceiling);
    Duration::from_millis(jittered.max(1))
}

/// A delayed retry of one message.
#[derive(Debug, Clone, Copy)]
pub struct Retry<'a> {
    /// Where the message goes back to.
    pub routing_key: &'a str,
    /// Attempts spent so far.
    pub attempts_done: u32,
    /// Times the message panicked the worker so far.
    pub panics: u32,
    pub delay: Duration,
}

/// Parks the message in the retry queue whose level covers the delay. The attempt and
/// panic counts and the original routing key travel in headers, not in broker
/// delivery counters.
pub async fn schedule(
    channel: &Channel,
    topology: &Topology,
    body: &[u8],
    properties: &BasicProperties,
    retry: Retry<'_>,
) -> Result<(), PublishError> {
    let delay_ms = u64::try_from(retry.delay.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let level = topology.level_for(delay_ms);
    let panics = (retry.panics > 0).then(|| AMQPValue::LongLongInt(retry.panics.into()));
    let headers = headers::with_headers(
        properties,
        &[
            (
                ATTEMPTS,
                Some(AMQPValue::LongLongInt(retry.attempts_done.into())),
            ),
            (
                ORIGINAL_ROUTING_KEY,
                Some(headers::long_string(retry.routing_key)),
            ),
            (PANICS, panics),
        ],
    );
    // The per-message expiration (≤ the queue's TTL) carries the jitter.
    let expiration = delay_ms.min(level).to_string();
    let props = headers::rebuild(properties, headers, Some(expiration));
    publish_confirmed(channel, "", &topology.retry_queue(level), body, props, true).await
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_within_jitter_and_respects_the_cap() {
        for _ in 0..100 {
            let first = backoff(1, 1000, 600_000);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(1000));
            let third = backoff(3, 1000, 600_000);
            assert!(third >= Duration::from_millis(2000) && third <= Duration::from_millis(4000));
            assert!(backoff(60, 1000, 600_000) <= Duration::from_millis(600_000));
        }
    }
}
