//! The verdict on one delivery: what handling it decided, as one value, before anything
//! is done at the broker ([`super::settle`] does that, in one place). Whether a failure
//! is tried again is decided here only: by its kind ([`ErrorKind::is_transient`]) and
//! the attempts left.

use super::shared::ConsumerSettings;
use crate::backoff;
use crate::domain::ErrorKind;
use crate::handlers::RetryLater;
use std::time::Duration;

/// How one delivery ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Durably handled; `outcome` labels what it did (`saved`, `duplicate`, ...).
    Ack { outcome: &'static str },
    /// Try again later: the message waits in the database for its next attempt.
    Retry(Retry),
    /// Give up: to the dead-letter queue, announced by `wallet.dead_lettered`.
    DeadLetter(DeadLetter),
    /// A deliberate hand-back (the worker is stopping, or its committer stopped): the
    /// broker gives the message to a consumer again.
    Requeue,
}

/// A delayed retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub kind: ErrorKind,
    /// One line for people; never a secret.
    pub detail: String,
    /// Attempts spent, this one included when it counted.
    pub attempts: u32,
    /// How long the message waits before its next attempt.
    pub delay: Duration,
    /// Times the message panicked the worker so far.
    pub panics: u32,
    /// The message's id, kept with its waiting row for the redelivery check.
    pub message_id: String,
}

/// A dead letter, and what is known of the message.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub kind: ErrorKind,
    pub detail: String,
    pub attempts: u32,
    /// The message's id, when one could be read.
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
}

/// What an attempt knows of the message it handles, for the dead letter it may become.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub order_id: Option<String>,
    /// Attempts spent by earlier deliveries.
    pub attempts_done: u32,
    /// Panics of earlier deliveries, and of this one.
    pub panics: u32,
}

impl Known {
    /// A dead letter of this message.
    pub fn dead_letter(&self, kind: ErrorKind, detail: String, attempts: u32) -> Verdict {
        Verdict::DeadLetter(DeadLetter {
            kind,
            detail,
            attempts,
            message_id: self.message_id.clone(),
            correlation_id: self.correlation_id.clone(),
            order_id: self.order_id.clone(),
        })
    }
}

/// The verdict on a failed attempt: a delayed retry while the failure may pass and
/// attempts are left, else a dead letter.
pub fn on_failure(failure: RetryLater, known: &Known, settings: &ConsumerSettings) -> Verdict {
    let attempts = known.attempts_done + u32::from(failure.counts_as_attempt);
    let exhausted = failure.counts_as_attempt && attempts >= settings.max_attempts;
    if !failure.kind.is_transient() || exhausted {
        return known.dead_letter(failure.kind, failure.detail, attempts);
    }
    let backoff = backoff::retry_delay(
        attempts.max(1),
        settings.retry_base_ms,
        settings.retry_max_ms,
    );
    let delay = failure
        .not_before
        .map_or(backoff, |at_least| at_least.max(backoff));
    Verdict::Retry(Retry {
        kind: failure.kind,
        detail: failure.detail,
        attempts,
        delay,
        panics: known.panics,
        message_id: known.message_id.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ConsumerSettings {
        ConsumerSettings {
            prefetch: 1,
            max_attempts: 3,
            retry_base_ms: 100,
            retry_max_ms: 1000,
            shutdown_grace: Duration::ZERO,
        }
    }

    fn failure(kind: ErrorKind, counts: bool) -> RetryLater {
        RetryLater {
            kind,
            detail: "why".into(),
            counts_as_attempt: counts,
            not_before: Some(Duration::from_secs(5)),
        }
    }

    #[test]
    fn a_transient_failure_is_retried_until_its_attempts_run_out() {
        let known = Known {
            attempts_done: 1,
            ..Known::default()
        };
        let retry = on_failure(failure(ErrorKind::OrderNotFound, true), &known, &settings());
        let Verdict::Retry(retry) = retry else {
            panic!("{retry:?}")
        };
        assert_eq!(retry.attempts, 2);
        assert_eq!(
            retry.delay,
            Duration::from_secs(5),
            "not before Retry-After"
        );
        let last = Known {
            attempts_done: 2,
            ..Known::default()
        };
        let verdict = on_failure(failure(ErrorKind::OrderNotFound, true), &last, &settings());
        assert!(
            matches!(&verdict, Verdict::DeadLetter(d) if d.attempts == 3 && d.kind == ErrorKind::OrderNotFound),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_wait_that_is_not_the_messages_fault_spends_no_attempt() {
        let known = Known {
            attempts_done: 2,
            ..Known::default()
        };
        let verdict = on_failure(
            failure(ErrorKind::GatewayUnavailable, false),
            &known,
            &settings(),
        );
        assert!(matches!(verdict, Verdict::Retry(r) if r.attempts == 2));
    }

    #[test]
    fn a_failure_that_cannot_pass_is_dead_lettered_at_once() {
        let verdict = on_failure(
            failure(ErrorKind::Malformed, true),
            &Known::default(),
            &settings(),
        );
        assert!(matches!(verdict, Verdict::DeadLetter(d) if d.attempts == 1));
    }
}
