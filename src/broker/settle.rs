//! The one place a [`Verdict`] becomes broker actions (docs/operations.md, broker
//! trouble): an ack; a delayed retry committed to the database and then an ack; a dead
//! letter published with a confirm and then an ack; or a deliberate hand-back.
//!
//! When the broker does not take a dead letter (a nack, no queue bound, no confirm in
//! time, a queue without a leader), the verdict stands: the same publish is
//! tried again with backoff while the delivery stays unacknowledged. It is never
//! requeued at once, the gateway is not called again for an outcome the worker already
//! has, and the broker's delivery count does not climb. Only when the channel itself is
//! gone does the worker let the delivery go; the broker then redelivers it.

use super::acker::Settle;
use super::dead_letter::{self, DeadLetter as Parked};
use super::publish::PublishError;
use super::retry;
use super::shared::Shared;
use super::verdict::{DeadLetter, Retry, Verdict};
use crate::domain::MessageType;
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::store::delayed;
use backon::Retryable;
use lapin::Channel;
use lapin::message::Delivery;
use std::future::Future;
use std::time::Duration;

/// Carries out `verdict` for `delivery`, first published with `routing_key`.
pub async fn settle(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    routing_key: &str,
    verdict: Verdict,
) -> Settle {
    let message_type = label(routing_key);
    match verdict {
        Verdict::Ack { outcome } => {
            count(message_type, outcome);
            Settle::Ack
        }
        Verdict::Requeue => {
            tracing::info!("handing the message back to the broker");
            Settle::Requeue
        }
        Verdict::Retry(retry) => {
            schedule(shared, delivery, routing_key, &retry).await;
            metrics::counter!(m::RETRIES, "kind" => retry.kind.as_str()).increment(1);
            count(message_type, "retry_scheduled");
            Settle::Ack
        }
        Verdict::DeadLetter(dead) => {
            let parked = park(shared, publish, delivery, routing_key, &dead).await;
            finished(parked, || {
                metrics::counter!(m::DEAD_LETTERS, "kind" => dead.kind.as_str()).increment(1);
                count(message_type, "dead_lettered");
            })
        }
    }
}

/// Ack once the publishes are confirmed; let the delivery go with its channel.
fn finished(published: Result<(), PublishError>, record: impl FnOnce()) -> Settle {
    match published {
        Ok(()) => {
            record();
            Settle::Ack
        }
        Err(err) => {
            tracing::warn!(
                error = %ErrorChain(&err),
                "the broker channel is gone; the broker redelivers the message"
            );
            Settle::Abandon
        }
    }
}

/// Writes the retry into the database and acks only once it is committed, waiting
/// out database outages with the delivery held, as commits do. Nothing waits in the
/// broker: the scheduler republishes the message when it is due.
async fn schedule(shared: &Shared, delivery: &Delivery, routing_key: &str, retry: &Retry) {
    tracing::info!(
        kind = %retry.kind,
        detail = %retry.detail,
        attempts = retry.attempts,
        delay_ms = retry.delay.as_millis() as u64,
        "retrying later"
    );
    let properties = retry::properties(&delivery.properties, routing_key, retry);
    let row = delayed::Delayed {
        key: &retry.message_id,
        body: &delivery.data,
        properties: &properties,
        routing_key,
        attempts: retry.attempts,
        panics: retry.panics,
        // The longest wait is WALLET_RETRY_MAX_MS, a longer Retry-After included (the
        // circuit's cool-down, say): the next attempt finds out whether it still holds.
        delay: retry
            .delay
            .min(Duration::from_millis(shared.settings.retry_max_ms)),
    };
    let pending = shared.commits.pending();
    let mut waits = crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5));
    while let Err(err) = delayed::store(&shared.handlers.pool, &shared.handlers.keys, &row).await {
        shared.commits.failed(crate::store::describe(&err));
        let delay = waits.next().unwrap_or(Duration::from_secs(5));
        tracing::warn!(
            error = %ErrorChain(&err),
            delay_ms = delay.as_millis() as u64,
            "cannot store the retry; holding the delivery and trying again"
        );
        tokio::time::sleep(delay).await;
    }
    pending.committed();
}

/// The dead letter to `.dlq`, confirmed, retried until it is; the intake stores it and
/// announces it with `wallet.dead_lettered`.
async fn park(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    routing_key: &str,
    dead: &DeadLetter,
) -> Result<(), PublishError> {
    tracing::warn!(kind = %dead.kind, detail = %dead.detail, attempts = dead.attempts, "dead-lettering");
    let why = Parked {
        kind: dead.kind,
        detail: &dead.detail,
        attempts: dead.attempts,
        routing_key,
        message_id: dead.message_id.as_deref(),
        correlation_id: dead.correlation_id.as_deref(),
        order_id: dead.order_id.as_deref(),
    };
    let topology = &shared.topology;
    let (body, properties) = (&delivery.data, &delivery.properties);
    until_confirmed(publish, "dead_letter", || {
        dead_letter::publish(publish, topology, body, properties, &why)
    })
    .await
}

/// Runs `attempt` until the broker confirms it, with backoff, while `publish` is open.
async fn until_confirmed<F, Fut>(
    publish: &Channel,
    target: &'static str,
    attempt: F,
) -> Result<(), PublishError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), PublishError>>,
{
    let waits = crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5));
    attempt
        .retry(waits)
        .sleep(tokio::time::sleep)
        .when(|_| publish.status().connected())
        .notify(|err, delay| {
            metrics::counter!(m::PUBLISH_RETRIES, "target" => target).increment(1);
            tracing::warn!(
                error = %ErrorChain(err),
                target,
                delay_ms = delay.as_millis() as u64,
                "the broker did not take the message; holding the delivery and trying again"
            );
        })
        .await
}

/// A label-safe message type (labels must not carry arbitrary input).
pub fn label(routing_key: &str) -> &'static str {
    MessageType::parse(routing_key).map_or("unknown", MessageType::as_str)
}

pub fn count(message_type: &'static str, outcome: &'static str) {
    metrics::counter!(m::MESSAGES, "type" => message_type, "outcome" => outcome).increment(1);
}
