//! Waiting for a service (broker, database) to come back: endless exponential backoff
//! with jitter. Shared by the reconnect loop and the delivery path, below both.

use backon::BackoffBuilder;
use std::time::Duration;

/// Endless exponential backoff with jitter between `min` and `max`.
pub fn endless(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}
