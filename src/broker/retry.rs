//! Delayed retries: what a message carries when it comes back (how long it waits is
//! [`crate::backoff::retry_delay`]). It waits in the database ([`crate::store::delayed`]),
//! and the [`super::scheduler`] brings it back.

use super::headers::{self, ATTEMPTS, ORIGINAL_ROUTING_KEY, PANICS};
use super::verdict;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

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
