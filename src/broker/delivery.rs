//! One delivery, end to end: parse, handle, and settle it in exactly one place
//! ([`settle_outcome`]): ack after commit, delayed retry, or dead letter.

use super::acker::Settle;
use super::consumer::Shared;
use super::headers::{self, ATTEMPTS, ORIGINAL_ROUTING_KEY, REPLAYED_AT};
use super::retry::{self, DeadLetter};
use crate::domain::{self, Inbound, RawMessage};
use crate::handlers::{self, Outcome, RetryLater};
use crate::metrics as m;
use crate::store;
use lapin::{Channel, message::Delivery};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Handles one delivery end to end and says how to settle it.
pub async fn process(shared: &Shared, publish: &Channel, delivery: &Delivery) -> Settle {
    let started = Instant::now();
    let properties = &delivery.properties;
    let routing_key = original_routing_key(delivery, &shared.topology.queue);
    let attempts_done = headers::integer(properties, ATTEMPTS)
        .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    let raw = RawMessage {
        body: &delivery.data,
        routing_key: &routing_key,
        message_id: properties.message_id().as_ref().map(|id| id.as_str()),
    };
    let inbound = match domain::parse(raw) {
        Ok(mut inbound) => {
            inbound.meta.maybe_seen =
                delivery.redelivered || headers::text(properties, REPLAYED_AT).is_some();
            inbound
        }
        Err(rejection) => {
            let id = domain::envelope::sniff_id(raw).unwrap_or_default();
            let span = tracing::warn_span!("delivery", message_id = %id, r#type = %routing_key);
            let _guard = span.enter();
            tracing::warn!(detail = %rejection, "malformed message; dead-lettering");
            let why = DeadLetter {
                kind: "malformed",
                detail: &rejection.to_string(),
                attempts: attempts_done + 1,
                routing_key: &routing_key,
            };
            return dead_letter(shared, publish, delivery, why, "malformed").await;
        }
    };
    let span = tracing::info_span!(
        "delivery",
        message_id = %inbound.meta.id,
        r#type = inbound.meta.kind,
        correlation_id = inbound.meta.correlation_id.as_deref().unwrap_or(""),
        attempt = attempts_done + 1,
    );
    async {
        let settle = handle(
            shared,
            publish,
            delivery,
            &inbound,
            &routing_key,
            attempts_done,
        )
        .await;
        metrics::histogram!(m::MESSAGE_SECONDS, "type" => inbound.meta.kind)
            .record(started.elapsed().as_secs_f64());
        settle
    }
    .instrument(span)
    .await
}

async fn handle(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    inbound: &Inbound,
    routing_key: &str,
    attempts_done: u32,
) -> Settle {
    let kind = inbound.meta.kind;
    let mut waits = database_backoff();
    let outcome = loop {
        match handlers::handle(&shared.handlers, inbound).await {
            Ok(outcome) => break outcome,
            Err(err) if store::is_transient(&err) => wait_for_database(&err, &mut waits).await,
            Err(err) => break Outcome::RetryLater(internal_error(&err)),
        }
    };
    let retry = match outcome {
        Outcome::Commit(effect) => loop {
            match shared
                .committer
                .commit(&inbound.meta.id, kind, effect.clone())
                .await
            {
                Ok(store::Committed::Applied { .. }) => {
                    count(kind, effect.outcome());
                    tracing::debug!(outcome = effect.outcome(), "committed");
                    return Settle::Ack;
                }
                Ok(store::Committed::Duplicate) => {
                    count(kind, "duplicate");
                    return Settle::Ack;
                }
                Err(err) if store::is_transient(&err) => wait_for_database(&err, &mut waits).await,
                Err(err) => break internal_error(&err),
            }
        },
        Outcome::Duplicate => {
            count(kind, "duplicate");
            return Settle::Ack;
        }
        Outcome::RetryLater(retry) => retry,
    };
    settle_outcome(shared, publish, delivery, routing_key, attempts_done, retry).await
}

/// The one place a transient failure becomes a delayed retry or, when attempts run
/// out, a dead letter.
async fn settle_outcome(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    routing_key: &str,
    attempts_done: u32,
    retry: RetryLater,
) -> Settle {
    let settings = &shared.settings;
    let attempts = attempts_done + u32::from(retry.counts_as_attempt);
    if retry.counts_as_attempt && attempts >= settings.max_attempts {
        tracing::warn!(kind = retry.kind, detail = %retry.detail, attempts, "attempts exhausted; dead-lettering");
        let why = DeadLetter {
            kind: retry.kind,
            detail: &retry.detail,
            attempts,
            routing_key,
        };
        return dead_letter(shared, publish, delivery, why, retry.kind).await;
    }
    let backoff = retry::backoff(
        attempts.max(1),
        settings.retry_base_ms,
        settings.retry_max_ms,
    );
    let delay = retry
        .not_before
        .map_or(backoff, |at_least| at_least.max(backoff));
    tracing::info!(kind = retry.kind, detail = %retry.detail, attempts, delay_ms = delay.as_millis() as u64, "retrying later");
    let scheduled = retry::schedule(
        publish,
        &shared.topology,
        &delivery.data,
        &delivery.properties,
        routing_key,
        attempts,
        delay,
    )
    .await;
    match scheduled {
        Ok(()) => {
            metrics::counter!(m::RETRIES, "kind" => retry.kind).increment(1);
            count(delivery_type(routing_key), "retry_scheduled");
            Settle::Ack
        }
        Err(err) => {
            tracing::error!(error = %err, "could not schedule the retry; handing the message back");
            Settle::Requeue
        }
    }
}

async fn dead_letter(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    why: DeadLetter<'_>,
    kind: &'static str,
) -> Settle {
    let routing_key = why.routing_key.to_owned();
    match retry::dead_letter(
        publish,
        &shared.topology,
        &delivery.data,
        &delivery.properties,
        why,
    )
    .await
    {
        Ok(()) => {
            metrics::counter!(m::DEAD_LETTERS, "kind" => kind).increment(1);
            count(delivery_type(&routing_key), "dead_lettered");
            Settle::Ack
        }
        Err(err) => {
            tracing::error!(error = %err, "could not dead-letter; handing the message back");
            Settle::Requeue
        }
    }
}

/// The routing key the message was published with. A message back from a retry
/// queue arrives through the default exchange with the queue's name as routing key.
fn original_routing_key(delivery: &Delivery, queue: &str) -> String {
    let key = delivery.routing_key.as_str();
    if key == queue
        && let Some(original) = headers::text(&delivery.properties, ORIGINAL_ROUTING_KEY)
    {
        return original;
    }
    key.to_owned()
}

/// A label-safe message type (labels must not carry arbitrary input).
fn delivery_type(routing_key: &str) -> &'static str {
    domain::envelope::INBOUND_TYPES
        .into_iter()
        .find(|known| *known == routing_key)
        .unwrap_or("unknown")
}

fn count(kind: &'static str, outcome: &'static str) {
    metrics::counter!(m::MESSAGES, "type" => kind, "outcome" => outcome).increment(1);
}

fn internal_error(err: &sqlx::Error) -> RetryLater {
    tracing::error!(error = %err, "database refused the change");
    RetryLater {
        kind: "internal_error",
        detail: format!("database error: {err}"),
        counts_as_attempt: true,
        not_before: None,
    }
}

fn database_backoff() -> backon::ExponentialBackoff {
    crate::worker::backoff(Duration::from_millis(100), Duration::from_secs(5))
}

/// The database is unreachable: wait and try again, holding the delivery unacked.
/// Messages are not burnt into the dead-letter queue by an outage.
async fn wait_for_database(err: &sqlx::Error, waits: &mut backon::ExponentialBackoff) {
    let delay = waits.next().unwrap_or(Duration::from_secs(5));
    tracing::warn!(error = %err, delay_ms = delay.as_millis() as u64, "database unavailable; waiting");
    tokio::time::sleep(delay).await;
}
