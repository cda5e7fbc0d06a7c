//! One cluster run: a worker on the cluster, the flaky gateway, load through the
//! cluster, the event reader, and the accounting line at the end. The settle phase
//! waits as long as outcomes keep coming and fails after [`STALL`] without progress; a
//! run that gets stuck anywhere fails within [`BUDGET`] with the state it is stuck in,
//! before nextest's limit.

use super::clients::{ClusterEvents, ClusterPublisher, ConfirmedSoFar, Sent};
use super::flaky::FlakyGateway;
use crate::helpers::*;
use crate::rabbit_cluster::{NODES, RabbitCluster};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wallet_worker::broker::Nodes;
use wallet_worker::config::WorkerArgs;
use wiremock::Mock;
use wiremock::matchers::{method, path};

pub const PROCESSED: &str = "SELECT count(*) FROM processed_messages";
/// Messages per second the publisher offers while the fault lasts. Each message is
/// delivered about 3.4 times (most fail three times first), and every delivery is a
/// quorum publish replicated on three nodes of this one shared two-core machine: more
/// would outrun the worker while other engineers build.
const RATE: f64 = 30.0;
/// How long the settle phase may see no new outcome before the run fails.
const STALL: Duration = Duration::from_secs(60);
/// The whole test, cluster start included, fails with its state after this long
/// (nextest ends a cluster test after 960 s, `.config/nextest.toml`).
pub const BUDGET: Duration = Duration::from_secs(900);
/// What the worker logs each time it gives a delivery back to the broker at once.
const HAND_BACK: &str = "handing the message back";

/// A worker on the cluster and everything around it.
pub struct Run {
    pub cluster: RabbitCluster,
    pub w: TestWorker,
    pub args: WorkerArgs,
    pub gateway: FlakyGateway,
    events: ClusterEvents,
    publisher: Mutex<Option<tokio::task::JoinHandle<Sent>>>,
    confirmed: ConfirmedSoFar,
    stop_load: CancellationToken,
    pub started: Instant,
    /// What the run is doing now, for a stuck report.
    phase: Mutex<String>,
}

impl Run {
    /// Starts the worker with `amqp_url` (the cluster's nodes in some order), the
    /// gateway, the event reader and the load.
    pub async fn start(cluster: RabbitCluster, amqp_url: String, tag: &'static str) -> Run {
        Self::start_with(cluster, amqp_url, tag, None, None).await
    }

    /// [`Self::start`], with the worker's queues declared through `node` first, so that
    /// node leads them whichever node the worker uses, and every `malformed_every`-th
    /// message malformed (a dead letter by rule).
    pub async fn start_declared_on(
        cluster: RabbitCluster,
        amqp_url: String,
        tag: &'static str,
        node: &str,
        malformed_every: usize,
    ) -> Run {
        Self::start_with(cluster, amqp_url, tag, Some(node), Some(malformed_every)).await
    }

    async fn start_with(
        cluster: RabbitCluster,
        amqp_url: String,
        tag: &'static str,
        declare_on: Option<&str>,
        malformed_every: Option<usize>,
    ) -> Run {
        let started = Instant::now();
        let mut args = test_args();
        args.amqp.amqp_url = amqp_url;
        // Deliveries wait on quorum confirms, not on the CPU: many in flight.
        args.prefetch = 128;
        args.max_attempts = 8;
        args.retry_base_ms = 1_000;
        args.retry_max_ms = 8_000;
        // The circuit is not under test: its cool-downs would only slow the run.
        args.circuit_threshold = 1_000_000;
        if let Some(node) = declare_on {
            declare_through(&cluster, node, &args).await;
        }
        let w = spawn_worker_with(args.clone()).await;
        let gateway = FlakyGateway::default();
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(gateway.clone())
            .mount(&w.gateway)
            .await;
        assert_eq!(
            cluster.quorum_members(&args.amqp.queue).await,
            NODES.map(|node| format!("wallet-{node}@localhost")),
            "the inbound queue is replicated on all three nodes"
        );
        let events = ClusterEvents::start(&args).await;
        let stop_load = CancellationToken::new();
        let publisher = ClusterPublisher::new(&args);
        let confirmed = publisher.confirmed_so_far();
        let load = publisher.publish_saves(tag, RATE, malformed_every, stop_load.clone());
        let publisher = tokio::spawn(load);
        Run {
            cluster,
            w,
            args,
            gateway,
            events,
            publisher: Mutex::new(Some(publisher)),
            confirmed,
            stop_load,
            started,
            phase: Mutex::new("started".into()),
        }
    }

    /// Says what the run does next (printed, and named if it gets stuck).
    pub fn enter(&self, phase: impl Into<String>) {
        let phase = phase.into();
        println!(
            "[cluster] {:.0} s: {phase}",
            self.started.elapsed().as_secs_f64()
        );
        *self.phase.lock().expect("phase") = phase;
    }

    /// Fails with the run's state if `scenario` has not finished within [`BUDGET`].
    pub async fn within_budget(&self, scenario: impl Future<Output = ()>) {
        let left = BUDGET.saturating_sub(self.started.elapsed());
        if tokio::time::timeout(left, scenario).await.is_err() {
            panic!("the cluster run is stuck: {}", self.state().await);
        }
    }

    /// Waits until many messages wait in delayed retries and some completed. A loaded
    /// machine may take a while (the three nodes just started): the wait fails only when
    /// neither outcomes nor gateway calls moved for [`STALL`].
    pub async fn wait_for_retries_under_way(&self) {
        let mut progress = Progress::new();
        loop {
            let (processed, calls) = (self.w.count(PROCESSED).await, self.gateway.calls());
            if processed >= 50 && calls.failed >= 300 {
                return;
            }
            let moved = processed + i64::try_from(calls.failed).expect("small");
            assert!(
                progress.still_moving(moved),
                "no retries under way, nothing moved for {STALL:?}: processed={processed} gateway={calls:?} confirmed={}",
                self.confirmed.get()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `more` messages than now are processed: progress after a fault. It
    /// fails only when processing stops for [`STALL`], never because the machine is slow.
    pub async fn wait_for_progress(&self, more: i64) {
        let target = self.w.count(PROCESSED).await + more;
        let mut progress = Progress::new();
        loop {
            let processed = self.w.count(PROCESSED).await;
            if processed >= target {
                return;
            }
            assert!(
                progress.still_moving(processed),
                "no progress for {STALL:?}: {processed} of {target} processed; {}",
                self.state().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Hand-backs the worker logged so far.
    pub fn hand_backs(&self) -> usize {
        log_lines_containing(HAND_BACK)
    }

    /// One line on where the run stands: what a stuck run reports.
    pub async fn state(&self) -> String {
        let phase = self.phase.lock().expect("phase").clone();
        let probe = async {
            let (_, body) = self.w.admin_get("/readyz", None).await;
            (body, self.w.count(PROCESSED).await)
        };
        let (readyz, processed) = match tokio::time::timeout(Duration::from_secs(3), probe).await {
            Ok((readyz, processed)) => (readyz, processed.to_string()),
            Err(_) => ("no answer".into(), "no answer".into()),
        };
        format!(
            "phase={phase} elapsed_s={:.0} confirmed={} processed={processed} {} gateway={:?} readyz={readyz}",
            self.started.elapsed().as_secs_f64(),
            self.confirmed.get(),
            self.events.state(),
            self.gateway.calls(),
        )
    }

    /// Stops the load, waits for every outcome, prints the accounting line and asserts
    /// that nothing was lost or doubled, and that the dead letters are exactly the
    /// malformed messages, each stored once.
    pub async fn finish(&self, name: &str, detail: &str) {
        self.enter("load stopped; waiting for every outcome");
        self.stop_load.cancel();
        let publisher = self.publisher.lock().expect("publisher").take();
        let sent = publisher.expect("finished once").await.expect("publisher");
        let good = sent.well_formed();
        let seen = self
            .events
            .seen_of(&good, sent.malformed.len(), STALL)
            .await;
        let (_, duplicated) = seen.ledger.report_with(name, &good, "");
        let missing = good.len() - seen.ledger.completed_of(&good);
        let processed = self.w.count(PROCESSED).await;
        let parked = dead_letters_stored(&self.w.pool).await;
        let dead = DeadLetterCheck::of(&sent.malformed, &seen.dead_lettered, &parked);
        let calls = self.gateway.calls();
        let per_message = |n: f64| n / (good.len().max(1) as f64);
        println!(
            "[{name}] published={} processed={processed} missing={missing} dead_letters={} \
             (expected {}, stored {}) redeliveries_per_msg={} gateway_calls_per_msg={:.2} \
             (max {}, attempt limit {}) republished={} given_up={} elapsed_s={:.0} {detail}",
            sent.confirmed.len(),
            seen.dead_lettered.len(),
            sent.malformed.len(),
            parked.len(),
            redeliveries(&self.w)
                .await
                .map_or("n/a".into(), |n| format!(
                    "{:.3}",
                    n / sent.confirmed.len().max(1) as f64
                )),
            per_message(calls.total as f64),
            calls.max_per_message,
            self.args.max_attempts,
            sent.republished,
            sent.given_up,
            self.started.elapsed().as_secs_f64(),
        );
        assert_eq!(missing, 0, "lost messages");
        assert_eq!(duplicated, 0, "duplicated effects");
        dead.assert_exact();
        assert_eq!(sent.given_up, 0, "messages the cluster never confirmed");
        assert!(calls.max_per_message <= self.args.max_attempts);
        assert_eq!(processed, good.len() as i64);
        let sources = self
            .w
            .count("SELECT count(*) FROM customer_payment_sources")
            .await;
        assert_eq!(sources, processed, "one saved card per message");
    }

    /// Messages waiting in the database for a delayed retry, per the worker's metrics.
    pub async fn delayed_now(&self) -> f64 {
        let (_, metrics) = self.w.admin_get("/metrics", None).await;
        metric(&metrics, "wallet_delayed_messages").unwrap_or(0.0)
    }

    /// Stops the worker and removes the test's queues.
    pub async fn stop(self) {
        self.w.stop().await;
    }
}

/// Declares the worker's topology on `node`, as the worker itself would.
async fn declare_through(cluster: &RabbitCluster, node: &str, args: &WorkerArgs) {
    let (connection, _) = Nodes::parse(&cluster.amqp_urls_from(node))
        .connect_from(0, "test-declare")
        .await
        .expect("the node answers");
    let topology = wallet_worker::broker::Topology::new(
        &args.amqp.exchange,
        &args.amqp.queue,
        args.retry_base_ms,
        args.retry_max_ms,
    );
    topology
        .declare(&connection)
        .await
        .expect("the topology declares");
    let _ = connection.close(200, "declared".into()).await;
}

/// Deliveries the worker saw marked redelivered, when it counts them.
async fn redeliveries(w: &TestWorker) -> Option<f64> {
    let (_, metrics) = w.admin_get("/metrics", None).await;
    metric(&metrics, "wallet_redeliveries_total")
}

/// The value of an unlabelled metric in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find(|line| line.split(' ').next() == Some(name))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// The dead letters of a run against the rule: every malformed message, and nothing
/// else, announced once and parked once in `.dlq`.
struct DeadLetterCheck {
    unexpected_events: Vec<String>,
    missing_events: Vec<String>,
    unexpected_parked: Vec<String>,
    parked_not_once: Vec<(String, usize)>,
}

impl DeadLetterCheck {
    fn of(expected: &[String], events: &[String], parked: &[String]) -> Self {
        let count = |ids: &[String], id: &str| ids.iter().filter(|i| *i == id).count();
        Self {
            unexpected_events: events
                .iter()
                .filter(|id| !expected.contains(id))
                .cloned()
                .collect(),
            missing_events: expected
                .iter()
                .filter(|id| !events.contains(id))
                .cloned()
                .collect(),
            unexpected_parked: parked
                .iter()
                .filter(|id| !expected.contains(id))
                .cloned()
                .collect(),
            parked_not_once: expected
                .iter()
                .map(|id| (id.clone(), count(parked, id)))
                .filter(|(_, n)| *n != 1)
                .collect(),
        }
    }

    fn assert_exact(&self) {
        assert!(
            self.unexpected_events.is_empty(),
            "dead letters no rule called for: {:?}",
            self.unexpected_events
        );
        assert!(
            self.missing_events.is_empty(),
            "malformed messages never announced as dead letters: {:?}",
            self.missing_events
        );
        assert!(
            self.unexpected_parked.is_empty(),
            "stored dead letters that no rule called for: {:?}",
            self.unexpected_parked
        );
        assert!(
            self.parked_not_once.is_empty(),
            "malformed messages not stored exactly once (id, copies): {:?}",
            self.parked_not_once
        );
    }
}

/// The message ids of the dead letters in the store, where the intake moves them from
/// `<queue>.dlq` (each announced by `wallet.dead_lettered` in the same transaction).
async fn dead_letters_stored(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT coalesce(message_id, '') FROM dead_letters")
        .fetch_all(pool)
        .await
        .expect("the stored dead letters")
}

/// A count that must keep growing: when it last did.
struct Progress {
    last: Option<i64>,
    since: tokio::time::Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            last: None,
            since: tokio::time::Instant::now(),
        }
    }

    /// Whether `count` grew within the last [`STALL`].
    fn still_moving(&mut self, count: i64) -> bool {
        if self.last.is_none_or(|last| count > last) {
            self.last = Some(count);
            self.since = tokio::time::Instant::now();
        }
        self.since.elapsed() < STALL
    }
}
