//! Waiting for a service (broker, database) to come back: endless exponential backoff
//! with jitter, shared by the reconnect loop and the delivery path; and how long a
//! message waits for its next attempt, decided by the verdict. Below all of them.

use backon::BackoffBuilder;
use rand::RngExt;
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

/// Backoff for delayed retries: `base * 2^(attempt-1)`, capped, with "equal jitter"
/// (a random point in the upper half), so synchronized failures spread out.
pub fn retry_delay(attempt: u32, base_ms: u64, max_ms: u64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(40));
    let ceiling = exp.min(max_ms).max(1);
    let jittered = rand::rng().random_range(ceiling / 2..=ceiling);
    Duration::from_millis(jittered.max(1))
}

#[cfg(test)]
mod tests {
    use super::retry_delay;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_within_jitter_and_respects_the_cap() {
        for _ in 0..100 {
            let first = retry_delay(1, 1000, 600_000);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(1000));
            let third = retry_delay(3, 1000, 600_000);
            assert!(third >= Duration::from_millis(2000) && third <= Duration::from_millis(4000));
            assert!(retry_delay(60, 1000, 600_000) <= Duration::from_millis(600_000));
        }
    }
}
