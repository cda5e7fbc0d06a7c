//! Delayed retries: how long a message waits when it cannot be handled now, and what
//! it carries when it comes back. It waits in the database ([`crate::store::delayed`]),
//! and the [`super::scheduler`] brings it back.

use super::headers::{self, ATTEMPTS, ORIGINAL_ROUTING_KEY, PANICS};
use super::verdict;
use lapin::BasicProperties;
use lapin::types::AMQPValue;
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

/// The properties a retried message is republished with: its own, plus the attempt
/// and panic counts and the original routing key in headers (docs/operations.md,
/// failure handling), since the republish goes to the work queue by name.
pub fn properties(
    properties: &BasicProperties,
    routing_key: &str,
    retry: &verdict::Retry,
) -> BasicProperties {
    let panics = (retry.panics > 0).then(|| AMQPValue::LongLongInt(retry.panics.into()));
    let headers = headers::with_headers(
        properties,
        &[
            (
                ATTEMPTS,
                Some(AMQPValue::LongLongInt(retry.attempts.into())),
            ),
            (
                ORIGINAL_ROUTING_KEY,
                Some(headers::long_string(routing_key)),
            ),
            (PANICS, panics),
        ],
    );
    headers::rebuild(properties, headers, None)
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
