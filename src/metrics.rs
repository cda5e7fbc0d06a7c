//! Metric names (Prometheus) and the recorder. Labels never carry ids or secrets.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Inbound messages handled, by `type` and `outcome`.
pub const MESSAGES: &str = "wallet_messages_total";
/// Seconds from delivery to settlement, by `type`.
pub const MESSAGE_SECONDS: &str = "wallet_message_seconds";
/// Token_url calls, by `gateway` and `status`.
pub const GATEWAY_CALLS: &str = "wallet_gateway_calls_total";
/// Token_url call latency, by `gateway`.
pub const GATEWAY_SECONDS: &str = "wallet_gateway_call_seconds";
/// Delayed retries scheduled, by `kind`.
pub const RETRIES: &str = "wallet_retries_scheduled_total";
/// Dead letters written, by `kind`.
pub const DEAD_LETTERS: &str = "wallet_dead_letters_total";
/// Messages per group-commit transaction.
pub const COMMIT_BATCH: &str = "wallet_commit_batch_messages";
/// Events committed but not yet confirmed by the broker.
pub const OUTBOX_BACKLOG: &str = "wallet_outbox_backlog";
/// Events published (confirmed) by the relay.
pub const EVENTS_PUBLISHED: &str = "wallet_events_published_total";
/// Deliveries being handled right now.
pub const IN_FLIGHT: &str = "wallet_deliveries_in_flight";
/// 1 while the gateway's circuit is open, by `gateway`.
pub const CIRCUIT_OPEN: &str = "wallet_gateway_circuit_open";
/// Rows deleted by the retention pruner, by `table`.
pub const RETENTION_PRUNED: &str = "wallet_retention_pruned_total";
/// Ready messages in the dead-letter intake queue `<queue>.dlq`, sampled every few
/// seconds: what the intake has not stored yet.
pub const DLQ_DEPTH: &str = "wallet_dlq_depth";
/// Dead letters in the store not replayed yet, by `kind` (the alerting signal).
pub const DEAD_LETTERS_STORED: &str = "wallet_dead_letters";
/// Dead letters the intake stored (new rows), by `kind`.
pub const DEAD_LETTERS_INGESTED: &str = "wallet_dead_letters_ingested_total";
/// 1 while connected to the broker.
pub const BROKER_CONNECTED: &str = "wallet_broker_connected";
/// 1 while the database answers (checked with readiness).
pub const DATABASE_UP: &str = "wallet_database_up";
/// 1 while `/readyz` would answer 200.
pub const READY: &str = "wallet_ready";
/// Panics contained, by `task` (`delivery`, `committer`, `relay`, ...).
pub const PANICS: &str = "wallet_panics_total";

/// Every `kind` of [`DEAD_LETTERS`]: the error kinds the worker dead-letters with, and
/// `other` for any it does not know (labels never carry arbitrary input).
pub const DEAD_LETTER_KINDS: [&str; 7] = [
    "malformed",
    "order_not_found",
    "gateway_unavailable",
    "internal_error",
    "poison_message",
    "delivery_limit",
    "other",
];

/// The label of an error kind: itself when it is one of [`DEAD_LETTER_KINDS`], else
/// `other` (labels never carry arbitrary input).
pub fn dead_letter_kind(kind: &str) -> &'static str {
    DEAD_LETTER_KINDS
        .into_iter()
        .find(|known| *known == kind)
        .unwrap_or("other")
}
/// Every `kind` of [`RETRIES`].
pub const RETRY_KINDS: [&str; 3] = ["gateway_unavailable", "order_not_found", "internal_error"];
/// Every `task` of [`PANICS`]: the supervised long-lived tasks (see
/// [`crate::supervisor::Supervisor::spawn`], which insists on this list) and `delivery`.
pub const PANIC_TASKS: [&str; 7] = [
    "delivery",
    "committer",
    "relay",
    "acker",
    "gateway-watcher",
    "pruner",
    "intake",
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("static bucket list is valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            zero_series();
            handle
        })
        .clone()
}

/// Creates the counter series of every known label at zero, and the unlabelled gauges.
/// A series created by its first increment starts at 1, which `increase()` and `rate()`
/// never see: an alert on the first dead letter of a kind, or the first panic, would
/// miss it. Dashboards also show 0 rather than "no data".
fn zero_series() {
    for kind in DEAD_LETTER_KINDS {
        metrics::counter!(DEAD_LETTERS, "kind" => kind).increment(0);
        metrics::counter!(DEAD_LETTERS_INGESTED, "kind" => kind).increment(0);
    }
    for kind in RETRY_KINDS {
        metrics::counter!(RETRIES, "kind" => kind).increment(0);
    }
    for task in PANIC_TASKS {
        metrics::counter!(PANICS, "task" => task).increment(0);
    }
    for table in ["processed_messages", "orders", "dead_letters"] {
        metrics::counter!(RETENTION_PRUNED, "table" => table).increment(0);
    }
    metrics::counter!(EVENTS_PUBLISHED).increment(0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::gauge!(OUTBOX_BACKLOG).set(0.0);
    metrics::gauge!(BROKER_CONNECTED).set(0.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(MESSAGES, "Inbound messages handled, by type and outcome");
    describe_histogram!(
        MESSAGE_SECONDS,
        metrics::Unit::Seconds,
        "Delivery to settlement"
    );
    describe_counter!(GATEWAY_CALLS, "token_url calls by gateway and HTTP status");
    describe_histogram!(
        GATEWAY_SECONDS,
        metrics::Unit::Seconds,
        "token_url call latency"
    );
    describe_counter!(RETRIES, "Delayed retries scheduled, by kind");
    describe_histogram!(COMMIT_BATCH, "Messages per group-commit transaction");
    describe_counter!(DEAD_LETTERS, "Dead letters written, by kind");
    describe_gauge!(OUTBOX_BACKLOG, "Events committed but not yet published");
    describe_counter!(EVENTS_PUBLISHED, "Events published with a broker confirm");
    describe_gauge!(IN_FLIGHT, "Deliveries being handled");
    describe_gauge!(CIRCUIT_OPEN, "1 while a gateway's circuit is open");
    describe_counter!(
        RETENTION_PRUNED,
        "Rows deleted by the retention pruner, by table"
    );
    describe_gauge!(
        DLQ_DEPTH,
        "Ready messages in the dead-letter intake queue, not stored yet"
    );
    describe_gauge!(
        DEAD_LETTERS_STORED,
        "Dead letters in the store not replayed yet, by kind"
    );
    describe_counter!(
        DEAD_LETTERS_INGESTED,
        "Dead letters the intake stored, by kind"
    );
    describe_gauge!(BROKER_CONNECTED, "1 while connected to the broker");
    describe_gauge!(DATABASE_UP, "1 while the database answers");
    describe_gauge!(
        READY,
        "1 while the worker is ready (broker, database, internal tasks)"
    );
    describe_counter!(PANICS, "Panics contained, by task");
}
