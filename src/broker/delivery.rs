//! One delivery, end to end: parse, keep poison out, handle, commit — each step yields
//! one [`Verdict`] — and settle it in exactly one place ([`settle::settle`]). Whatever
//! happens, a panic included, the delivery ends with a verdict. Its span joins the trace
//! of the message's `traceparent` header (docs/interface.md, trace context).

use super::acker::Settle;
use super::headers::{self, ATTEMPTS, PANICS, REPLAYED_AT};
use super::settle;
use super::shared::Shared;
use super::verdict::{self, Known, Verdict};
use crate::domain::envelope::{sniff_correlation_id, sniff_id};
use crate::domain::{self, ErrorKind, Inbound, RawMessage, Rejection};
use crate::handlers::{self, HandlerError, Outcome, RetryLater};
use crate::metrics as m;
use crate::store::{self, CommitError, delayed, unfinished};
use crate::supervisor::panic_message;
use crate::telemetry::propagation;
use futures::FutureExt;
use lapin::{Channel, message::Delivery};
use opentelemetry::context::FutureExt as _;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Starts of one message that did not finish (the worker crashed or stalled with it)
/// before the worker dead-letters it as poison — well before the broker's own limit,
/// which would dead-letter it without our headers. Counted in the ledger of unfinished
/// deliveries, so redeliveries caused by broker trouble never count.
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

impl<'a> Received<'a> {
    fn of(delivery: &'a Delivery, queue: &str) -> Self {
        let count = |name| {
            headers::integer(&delivery.properties, name)
                .map_or(0, |n| u32::try_from(n.max(0)).unwrap_or(u32::MAX))
        };
        Self {
            delivery,
            routing_key: original_routing_key(delivery, queue),
            attempts_done: count(ATTEMPTS),
            panics: count(PANICS),
        }
    }

    fn raw(&self) -> RawMessage<'_> {
        RawMessage {
            body: &self.delivery.data,
            routing_key: &self.routing_key,
            message_id: self
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str()),
        }
    }
}

/// Handles one delivery end to end and settles it; says how the acker ends it.
pub async fn process(shared: &Shared, publish: &Channel, delivery: &Delivery) -> Settle {
    if delivery.redelivered {
        metrics::counter!(m::REDELIVERIES).increment(1);
    }
    let received = Received::of(delivery, &shared.topology.queue);
    match domain::parse(received.raw()) {
        Ok(mut inbound) => {
            inbound.meta.maybe_seen =
                delivery.redelivered || headers::text(&delivery.properties, REPLAYED_AT).is_some();
            handled(shared, publish, &received, &inbound).await
        }
        Err(rejection) => malformed(shared, publish, &received, rejection).await,
    }
}

/// A message that cannot be read is dead-lettered at once, with what could be read of
/// its envelope (its id, its correlation id) so the pipeline still hears of it.
async fn malformed(
    shared: &Shared,
    publish: &Channel,
    received: &Received<'_>,
    rejection: Rejection,
) -> Settle {
    let known = Known {
        message_id: sniff_id(received.raw()),
        correlation_id: sniff_correlation_id(received.raw()),
        ..Known::default()
    };
    let span = tracing::warn_span!(
        "delivery",
        otel.kind = "consumer",
        message_id = known.message_id.as_deref().unwrap_or(""),
        r#type = %received.routing_key,
        correlation_id = known.correlation_id.as_deref().unwrap_or(""),
    );
    let trace = propagation::parent_span(&span, trace_parent(received.delivery));
    let detail = rejection.to_string();
    let verdict = known.dead_letter(ErrorKind::Malformed, detail, received.attempts_done + 1);
    let (delivery, routing_key) = (received.delivery, &received.routing_key);
    async {
        tracing::warn!(detail = %rejection, "malformed message");
        settle::settle(shared, publish, delivery, routing_key, verdict).await
    }
    .instrument(span)
    .with_context(trace)
    .await
}

/// A readable message: its verdict, settled, and its unfinished start forgotten.
async fn handled(
    shared: &Shared,
    publish: &Channel,
    received: &Received<'_>,
    inbound: &Inbound,
) -> Settle {
    let started = Instant::now();
    let span = tracing::info_span!(
        "delivery",
        otel.kind = "consumer",
        message_id = %inbound.meta.id,
        r#type = inbound.meta.kind.as_str(),
        correlation_id = inbound.meta.correlation_id.as_deref().unwrap_or(""),
        attempt = received.attempts_done + 1,
    );
    let trace = propagation::parent_span(&span, trace_parent(received.delivery));
    async {
        let known = Known {
            message_id: Some(inbound.meta.id.to_string()),
            correlation_id: inbound.meta.correlation_id.clone(),
            order_id: inbound.command.order_id().map(|id| id.to_string()),
            attempts_done: received.attempts_done,
            panics: received.panics,
        };
        let starts = unfinished_starts(shared, received.delivery, &inbound.meta.id).await;
        let verdict = match (starts, poison(received, starts)) {
            (Some(Redelivered::AlreadyDelayed), _) => Verdict::Ack {
                outcome: "retry_pending",
            },
            (_, Some(detail)) => {
                known.dead_letter(ErrorKind::PoisonMessage, detail, known.attempts_done)
            }
            (_, None) => handle_contained(shared, inbound, &known).await,
        };
        let routing_key = &received.routing_key;
        let settled =
            settle::settle(shared, publish, received.delivery, routing_key, verdict).await;
        if matches!(starts, Some(Redelivered::Started(_))) {
            finished(shared, &inbound.meta.id).await;
        }
        metrics::histogram!(m::MESSAGE_SECONDS, "type" => inbound.meta.kind.as_str())
            .record(started.elapsed().as_secs_f64());
        settled
    }
    .instrument(span)
    .with_context(trace)
    .await
}

/// Why the message is poison, if it is: it started too often without finishing, or it
/// panicked the worker too often.
fn poison(received: &Received<'_>, starts: Option<Redelivered>) -> Option<String> {
    let unfinished = match starts {
        Some(Redelivered::Started(starts)) => starts,
        _ => 0,
    };
    (unfinished >= POISON_DELIVERIES || received.panics >= POISON_PANICS).then(|| {
        format!(
            "started {unfinished} times without finishing and panicked the worker {} times",
            received.panics
        )
    })
}

/// What the database knows of a redelivered message.
#[derive(Debug, Clone, Copy)]
enum Redelivered {
    /// It already waits for a delayed retry: its earlier delivery stored the retry and
    /// the ack did not reach the broker. This copy is acked without another attempt.
    AlreadyDelayed,
    /// Its starts that did not finish, this one included.
    Started(i64),
}

/// For a redelivered message, whether it already waits for a delayed retry, else this
/// start recorded in the ledger of unfinished deliveries with how many earlier starts
/// did not finish; `None` for a first delivery, which costs nothing. (The first
/// delivery is never recorded and this one is: the count is that of the earlier ones.)
/// Waits for the database like any other step.
async fn unfinished_starts(shared: &Shared, delivery: &Delivery, id: &str) -> Option<Redelivered> {
    if !delivery.redelivered {
        return None;
    }
    let pool = &shared.handlers.pool;
    let mut waits = database_backoff();
    loop {
        let known = async {
            if delayed::is_waiting(pool, id).await? {
                return Ok(Redelivered::AlreadyDelayed);
            }
            unfinished::start(pool, id).await.map(Redelivered::Started)
        };
        match known.await {
            Ok(known) => return Some(known),
            Err(err) => wait_for_database(&err, &mut waits).await,
        }
    }
}

/// The delivery's handling ended (settled, handed back, or let go with its channel):
/// its start no longer counts toward poison.
async fn finished(shared: &Shared, id: &str) {
    if let Err(err) = unfinished::finish(&shared.handlers.pool, id).await {
        tracing::warn!(
            error = format!("{err:#}"),
            "cannot clear the message's unfinished start; it counts once more toward poison"
        );
    }
}

/// [`handle`], with a panic turned into a failed attempt (or poison, the third time).
async fn handle_contained(shared: &Shared, inbound: &Inbound, known: &Known) -> Verdict {
    match AssertUnwindSafe(handle(shared, inbound, known))
        .catch_unwind()
        .await
    {
        Ok(verdict) => verdict,
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            metrics::counter!(m::PANICS, "task" => "delivery").increment(1);
            tracing::error!(panic = %why, "the handler panicked");
            let known = Known {
                panics: known.panics + 1,
                ..known.clone()
            };
            if known.panics >= POISON_PANICS {
                let detail = format!("panicked the worker {} times: {why}", known.panics);
                let attempts = known.attempts_done + 1;
                return known.dead_letter(ErrorKind::PoisonMessage, detail, attempts);
            }
            let failure = RetryLater {
                kind: ErrorKind::InternalError,
                detail: format!("the worker panicked handling this message: {why}"),
                counts_as_attempt: true,
                not_before: None,
            };
            verdict::on_failure(failure, &known, &shared.settings)
        }
    }
}

async fn handle(shared: &Shared, inbound: &Inbound, known: &Known) -> Verdict {
    crate::faults::panic_for("delivery.panic", &inbound.meta.id);
    crate::faults::crash_for("delivery.crash", &inbound.meta.id);
    let mut waits = database_backoff();
    let outcome = loop {
        match handlers::handle(&shared.handlers, inbound).await {
            Ok(outcome) => break outcome,
            Err(err) if err.is_transient() => wait_for_database(&err, &mut waits).await,
            Err(HandlerError::Database(err)) => break Outcome::RetryLater(internal_error(&err)),
        }
    };
    let failure = match outcome {
        Outcome::Commit(change) => {
            crate::faults::pause_for("commit.before", &inbound.meta.id).await;
            match commit(shared, inbound, change, &mut waits).await {
                Ok(verdict) => return verdict,
                Err(failure) => failure,
            }
        }
        Outcome::Duplicate => {
            return Verdict::Ack {
                outcome: "duplicate",
            };
        }
        Outcome::RetryLater(failure) => failure,
    };
    verdict::on_failure(failure, known, &shared.settings)
}

/// Commits, waiting out database outages and timeouts with the delivery held
/// unacked; the commit watchdog sees how long it waits.
async fn commit(
    shared: &Shared,
    inbound: &Inbound,
    change: domain::Change,
    waits: &mut backon::ExponentialBackoff,
) -> Result<Verdict, RetryLater> {
    let change = std::sync::Arc::new(change);
    let pending = shared.commits.pending();
    loop {
        let committed = shared
            .committer
            .commit(&inbound.meta.id, inbound.meta.kind, change.clone())
            .await;
        match committed {
            Ok(store::Committed::Applied { outcome, .. }) => {
                pending.committed();
                let outcome = outcome.as_str();
                tracing::debug!(outcome, "committed");
                return Ok(Verdict::Ack { outcome });
            }
            Ok(store::Committed::Duplicate) => {
                pending.committed();
                return Ok(Verdict::Ack {
                    outcome: "duplicate",
                });
            }
            Err(CommitError::Stopped) => return Ok(Verdict::Requeue),
            Err(CommitError::Database(err)) if store::is_outage(&err) => {
                shared.commits.failed(store::describe(&err));
                wait_for_database(&err, waits).await;
            }
            Err(CommitError::Database(err)) => return Err(internal_error(&err)),
        }
    }
}

/// The trace the message's publisher started (docs/interface.md, trace context), if it
/// sent one. A retried or replayed message keeps its headers, so every attempt joins
/// the same trace.
fn trace_parent(delivery: &Delivery) -> opentelemetry::Context {
    propagation::extract(headers::trace_context(&delivery.properties).as_ref())
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

fn internal_error(err: &sqlx::Error) -> RetryLater {
    tracing::error!(error = format!("{err:#}"), "database refused the change");
    RetryLater {
        kind: ErrorKind::InternalError,
        detail: format!("database error: {err}"),
        counts_as_attempt: true,
        not_before: None,
    }
}

fn database_backoff() -> backon::ExponentialBackoff {
    crate::backoff::endless(Duration::from_millis(100), Duration::from_secs(5))
}

/// The database is unavailable (or a statement or lock wait ran out of time): wait and
/// try again, holding the delivery unacked. An outage never spends attempts.
async fn wait_for_database(
    err: &(dyn std::error::Error + Sync),
    waits: &mut backon::ExponentialBackoff,
) {
    let delay = waits.next().unwrap_or(Duration::from_secs(5));
    tracing::warn!(
        error = format!("{err:#}"),
        delay_ms = delay.as_millis() as u64,
        "database unavailable; waiting"
    );
    tokio::time::sleep(delay).await;
}
