//! One delivery, end to end: parse, handle, commit, and settle it in exactly one place
//! ([`settle_outcome`]): ack after commit, delayed retry, or dead letter. Whatever
//! happens — a panic included — the delivery ends settled. Its span joins the trace of
//! the message's `traceparent` header (docs/interface.md, trace context).

use super::acker::Settle;
use super::consumer::Shared;
use super::dead_letter::{self, DeadLetter};
use super::headers::{self, ATTEMPTS, DELIVERY_COUNT, PANICS, REPLAYED_AT};
use super::retry::{self, Retry};
use crate::domain::{self, Inbound, RawMessage};
use crate::handlers::{self, Outcome, RetryLater};
use crate::metrics as m;
use crate::store::{self, CommitError};
use crate::supervisor::panic_message;
use crate::telemetry::propagation;
use futures::FutureExt;
use lapin::{Channel, message::Delivery};
use opentelemetry::context::FutureExt as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Deliveries of one message that ended unsettled (the worker crashed, stalled or lost
/// its channel with it) before the worker dead-letters it as poison — well before the
/// broker's own limit, which would drop it or dead-letter it without our headers.
pub const POISON_DELIVERIES: i64 = 10;
/// Panics of the handler on one message before it is dead-lettered as poison.
pub const POISON_PANICS: u32 = 3;

/// What is known of a delivery before its body is interpreted.
struct Received<'a> {
    delivery: &'a Delivery,
    /// The routing key it was originally published with.
    routing_key: String,
    /// Attempts spent by earlier deliveries (`x-wallet-attempts`).
    attempts_done: u32,
    /// Panics of earlier deliveries (`x-wallet-panics`).
    panics: u32,
}

/// Handles one delivery end to end and says how to settle it.
pub async fn process(shared: &Shared, publish: &Channel, delivery: &Delivery) -> Settle {
    let started = Instant::now();
    let properties = &delivery.properties;
    let count = |name| {
        headers::integer(properties, name)
            .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
    };
    let received = Received {
        delivery,
        routing_key: original_routing_key(delivery, &shared.topology.queue),
        attempts_done: count(ATTEMPTS),
        panics: count(PANICS),
    };
    let raw = RawMessage {
        body: &delivery.data,
        routing_key: &received.routing_key,
        message_id: properties.message_id().as_ref().map(|id| id.as_str()),
    };
    let inbound = match domain::parse(raw) {
        Ok(mut inbound) => {
            inbound.meta.maybe_seen =
                delivery.redelivered || headers::text(properties, REPLAYED_AT).is_some();
            inbound
        }
        Err(rejection) => {
            let id = domain::envelope::sniff_id(raw);
            let span = tracing::warn_span!("delivery", otel.kind = "consumer", message_id = id.as_deref().unwrap_or(""), r#type = %received.routing_key);
            let trace = propagation::parent_span(&span, trace_parent(delivery));
            let why = DeadLetter {
                kind: "malformed",
                detail: &rejection.to_string(),
                attempts: received.attempts_done + 1,
                routing_key: &received.routing_key,
                message_id: id.as_deref(),
                correlation_id: None,
                order_id: None,
            };
            return async {
                tracing::warn!(detail = %rejection, "malformed message; dead-lettering");
                dead_letter(shared, publish, delivery, why).await
            }
            .instrument(span)
            .with_context(trace)
            .await;
        }
    };
    let span = tracing::info_span!(
        "delivery",
        otel.kind = "consumer",
        message_id = %inbound.meta.id,
        r#type = inbound.meta.kind,
        correlation_id = inbound.meta.correlation_id.as_deref().unwrap_or(""),
        attempt = received.attempts_done + 1,
    );
    let trace = propagation::parent_span(&span, trace_parent(delivery));
    async {
        let settle = handle_contained(shared, publish, &received, &inbound).await;
        metrics::histogram!(m::MESSAGE_SECONDS, "type" => inbound.meta.kind)
            .record(started.elapsed().as_secs_f64());
        settle
    }
    .instrument(span)
    .with_context(trace)
    .await
}

/// The trace the message's publisher started (docs/interface.md, trace context), if it sent one. A retried
/// or replayed message keeps its headers, so every attempt joins the same trace.
fn trace_parent(delivery: &Delivery) -> opentelemetry::Context {
    propagation::extract(headers::trace_context(&delivery.properties).as_ref())
}

/// [`handle`], with poison messages kept out and a panic turned into a failed attempt.
async fn handle_contained(
    shared: &Shared,
    publish: &Channel,
    received: &Received<'_>,
    inbound: &Inbound,
) -> Settle {
    let unsettled = headers::integer(&received.delivery.properties, DELIVERY_COUNT).unwrap_or(0);
    if unsettled >= POISON_DELIVERIES || received.panics >= POISON_PANICS {
        let detail = format!(
            "delivered {unsettled} times without being settled and panicked the worker {} times",
            received.panics
        );
        tracing::error!(%detail, "poison message; dead-lettering");
        let why = dead_letter_of(
            inbound,
            received,
            "poison_message",
            &detail,
            received.attempts_done,
        );
        return dead_letter(shared, publish, received.delivery, why).await;
    }
    match AssertUnwindSafe(handle(shared, publish, received, inbound))
        .catch_unwind()
        .await
    {
        Ok(settle) => settle,
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            metrics::counter!(m::PANICS, "task" => "delivery").increment(1);
            tracing::error!(panic = %why, "the handler panicked; the message is retried later");
            let retry = RetryLater {
                kind: "internal_error",
                detail: format!("the worker panicked handling this message: {why}"),
                counts_as_attempt: true,
                not_before: None,
            };
            let panics = received.panics + 1;
            if panics >= POISON_PANICS {
                let detail = format!("panicked the worker {panics} times: {why}");
                let attempts = received.attempts_done + 1;
                let why = dead_letter_of(inbound, received, "poison_message", &detail, attempts);
                return dead_letter(shared, publish, received.delivery, why).await;
            }
            settle_outcome(shared, publish, received, inbound, retry, panics).await
        }
    }
}

async fn handle(
    shared: &Shared,
    publish: &Channel,
    received: &Received<'_>,
    inbound: &Inbound,
) -> Settle {
    crate::faults::panic_for("delivery.panic", &inbound.meta.id);
    crate::faults::crash_for("delivery.crash", &inbound.meta.id);
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
        Outcome::Commit(change) => {
            crate::faults::pause_for("commit.before", &inbound.meta.id).await;
            match commit(shared, inbound, change, &mut waits).await {
                Ok(settle) => return settle,
                Err(retry) => retry,
            }
        }
        Outcome::Duplicate => {
            count(kind, "duplicate");
            return Settle::Ack;
        }
        Outcome::RetryLater(retry) => retry,
    };
    settle_outcome(shared, publish, received, inbound, retry, received.panics).await
}

/// Commits, waiting out database outages with the delivery held unacked.
async fn commit(
    shared: &Shared,
    inbound: &Inbound,
    change: store::Change,
    waits: &mut backon::ExponentialBackoff,
) -> Result<Settle, RetryLater> {
    let kind = inbound.meta.kind;
    let change = std::sync::Arc::new(change);
    loop {
        match shared
            .committer
            .commit(&inbound.meta.id, kind, change.clone())
            .await
        {
            Ok(store::Committed::Applied { outcome, .. }) => {
                count(kind, outcome);
                tracing::debug!(outcome, "committed");
                return Ok(Settle::Ack);
            }
            Ok(store::Committed::Duplicate) => {
                count(kind, "duplicate");
                return Ok(Settle::Ack);
            }
            Err(CommitError::Stopped) => return Ok(Settle::Requeue),
            Err(CommitError::Database(err)) if store::is_transient(&err) => {
                wait_for_database(&err, waits).await;
            }
            Err(CommitError::Database(err)) => return Err(internal_error(&err)),
        }
    }
}

/// The one place a transient failure becomes a delayed retry or, when attempts run
/// out, a dead letter.
async fn settle_outcome(
    shared: &Shared,
    publish: &Channel,
    received: &Received<'_>,
    inbound: &Inbound,
    retry: RetryLater,
    panics: u32,
) -> Settle {
    let settings = &shared.settings;
    let attempts = received.attempts_done + u32::from(retry.counts_as_attempt);
    if retry.counts_as_attempt && attempts >= settings.max_attempts {
        tracing::warn!(kind = retry.kind, detail = %retry.detail, attempts, "attempts exhausted; dead-lettering");
        let why = dead_letter_of(inbound, received, retry.kind, &retry.detail, attempts);
        return dead_letter(shared, publish, received.delivery, why).await;
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
    let delivery = received.delivery;
    let scheduled = retry::schedule(
        publish,
        &shared.topology,
        &delivery.data,
        &delivery.properties,
        Retry {
            routing_key: &received.routing_key,
            attempts_done: attempts,
            panics,
            delay,
        },
    )
    .await;
    match scheduled {
        Ok(()) => {
            metrics::counter!(m::RETRIES, "kind" => retry.kind).increment(1);
            count(inbound.meta.kind, "retry_scheduled");
            Settle::Ack
        }
        Err(err) => {
            tracing::error!(error = %err, "could not schedule the retry; handing the message back");
            Settle::Requeue
        }
    }
}

fn dead_letter_of<'a>(
    inbound: &'a Inbound,
    received: &'a Received<'_>,
    kind: &'a str,
    detail: &'a str,
    attempts: u32,
) -> DeadLetter<'a> {
    DeadLetter {
        kind,
        detail,
        attempts,
        routing_key: &received.routing_key,
        message_id: Some(&inbound.meta.id),
        correlation_id: inbound.meta.correlation_id.as_deref(),
        order_id: inbound.command.order_id(),
    }
}

/// Dead-letters the delivery and announces it; acked only once both are confirmed.
async fn dead_letter(
    shared: &Shared,
    publish: &Channel,
    delivery: &Delivery,
    why: DeadLetter<'_>,
) -> Settle {
    let message_type = delivery_type(why.routing_key);
    let kind = why.kind.to_owned();
    match dead_letter::publish(
        publish,
        &shared.topology,
        &delivery.data,
        &delivery.properties,
        why,
    )
    .await
    {
        Ok(()) => {
            metrics::counter!(m::DEAD_LETTERS, "kind" => error_label(&kind)).increment(1);
            count(message_type, "dead_lettered");
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
        && let Some(original) = headers::text(&delivery.properties, headers::ORIGINAL_ROUTING_KEY)
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

/// A label-safe error kind: one of [`m::DEAD_LETTER_KINDS`], which start at zero.
fn error_label(kind: &str) -> &'static str {
    m::DEAD_LETTER_KINDS
        .into_iter()
        .find(|known| *known == kind)
        .unwrap_or("other")
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
    crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5))
}

/// The database is unreachable: wait and try again, holding the delivery unacked.
/// Messages are not burnt into the dead-letter queue by an outage.
async fn wait_for_database(err: &sqlx::Error, waits: &mut backon::ExponentialBackoff) {
    let delay = waits.next().unwrap_or(Duration::from_secs(5));
    tracing::warn!(error = %err, delay_ms = delay.as_millis() as u64, "database unavailable; waiting");
    tokio::time::sleep(delay).await;
}
