//! Metric names (Prometheus) and the recorder. Labels never carry ids or secrets.

use crate::domain::ErrorKind;
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
/// Messages waiting in Postgres for a delayed retry, sampled by the scheduler.
pub const DELAYED: &str = "wallet_delayed_messages";
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

/// Deliveries the broker marked redelivered (a crash, a lost channel or connection, a
/// hand-back): broker trouble shows here, not in dead letters.
pub const REDELIVERIES: &str = "wallet_redeliveries_total";
/// Publishes of a dead letter (or its announcement) tried again after the broker refused
/// or did not confirm them, by `target` (`dead_letter`).
pub const PUBLISH_RETRIES: &str = "wallet_settle_publish_retries_total";

/// The label of a stored dead letter's error kind: an [`ErrorKind`]'s own name, or
/// `other` for one the worker does not know (labels never carry arbitrary input).
pub fn dead_letter_kind(kind: &str) -> &'static str {
    ErrorKind::parse(kind).map_or("other", ErrorKind::as_str)
}

/// Every `kind` label of the dead-letter store's series.
pub fn dead_letter_kinds() -> impl Iterator<Item = &'static str> {
    ErrorKind::ALL
        .into_iter()
        .map(ErrorKind::as_str)
        .chain(["other"])
}

/// Every `task` of [`PANICS`]: the supervised long-lived tasks (see
/// [`crate::supervisor::Supervisor::spawn`], which insists on this list) and `delivery`.
pub const PANIC_TASKS: [&str; 8] = [
    "delivery",
    "scheduler",
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
            keep_up(handle.clone());
            handle
        })
        .clone()
}

/// Drains the histograms' recorded samples into their buckets every few seconds. The
/// recorder keeps every sample until someone does: without a scrape of `/metrics`, two
/// samples a message would pile up for as long as the process runs.
fn keep_up(handle: PrometheusHandle) {
    let upkeep = move || {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            handle.run_upkeep();
        }
    };
    let _ = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(upkeep);
}

/// Creates the counter series of every known label at zero, and the unlabelled gauges.
/// A series created by its first increment starts at 1, which `increase()` and `rate()`
/// never see: an alert on the first dead letter of a kind, or the first panic, would
/// miss it. Dashboards also show 0 rather than "no data".
fn zero_series() {
    // Labels come from `ErrorKind` only: never arbitrary input.
    for kind in ErrorKind::ALL {
        metrics::counter!(DEAD_LETTERS, "kind" => kind.as_str()).increment(0);
        if kind.is_transient() {
            metrics::counter!(RETRIES, "kind" => kind.as_str()).increment(0);
        }
    }
    for kind in dead_letter_kinds() {
        metrics::counter!(DEAD_LETTERS_INGESTED, "kind" => kind).increment(0);
    }
    metrics::counter!(PUBLISH_RETRIES, "target" => "dead_letter").increment(0);
    metrics::counter!(REDELIVERIES).increment(0);
    for task in PANIC_TASKS {
        metrics::counter!(PANICS, "task" => task).increment(0);
    }
    for table in [
        "processed_messages",
        "orders",
        "unfinished_deliveries",
        "dead_letters",
    ] {
        metrics::counter!(RETENTION_PRUNED, "table" => table).increment(0);
    }
    metrics::counter!(EVENTS_PUBLISHED).increment(0);
    metrics::gauge!(IN_FLIGHT).set(0.0);
    metrics::gauge!(OUTBOX_BACKLOG).set(0.0);
    metrics::gauge!(DELAYED).set(0.0);
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
        DELAYED,
        "Messages waiting in the database for a delayed retry"
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
    describe_counter!(REDELIVERIES, "Deliveries the broker marked redelivered");
    describe_counter!(
        PUBLISH_RETRIES,
        "Dead-letter publishes tried again, by target"
    );
}
