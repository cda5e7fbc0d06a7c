//! One cluster run: a worker on the cluster, the flaky gateway, load through the
//! cluster, the event reader, and the accounting line at the end. A run that gets stuck
//! fails within [`BUDGET`] with the state it is stuck in, well before nextest's limit.

use super::clients::{ClusterEvents, ClusterPublisher, ConfirmedSoFar, Sent};
use super::flaky::FlakyGateway;
use crate::helpers::*;
use crate::rabbit_cluster::{NODES, RabbitCluster};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
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
/// delivered about 3.4 times (most fail three times first), and every retry is a quorum
/// publish replicated on three nodes of this one machine: more would outrun the worker.
const RATE: f64 = 50.0;
/// How long every confirmed message has to show its outcome once the load stopped.
const SETTLE_WITHIN: Duration = Duration::from_secs(90);
/// The whole test, cluster start included, fails with its state after this long
/// (nextest ends a cluster test after 360 s).
pub const BUDGET: Duration = Duration::from_secs(300);
/// How long the load may take to put many messages in delayed retries.
const WARM_UP_WITHIN: Duration = Duration::from_secs(60);
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
        Self::start_with(cluster, amqp_url, tag, None).await
    }

    /// [`Self::start`], with the worker's queues declared through `node` first, so that
    /// node leads them whichever node the worker uses.
    pub async fn start_declared_on(
        cluster: RabbitCluster,
        amqp_url: String,
        tag: &'static str,
        node: &str,
    ) -> Run {
        Self::start_with(cluster, amqp_url, tag, Some(node)).await
    }

    async fn start_with(
        cluster: RabbitCluster,
        amqp_url: String,
        tag: &'static str,
        declare_on: Option<&str>,
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
        let publisher = tokio::spawn(publisher.publish_saves(tag, RATE, stop_load.clone()));
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

    /// Waits until many messages wait in delayed retries and some completed (a loaded
    /// machine may take a while: the three nodes just started).
    pub async fn wait_for_retries_under_way(&self) {
        let deadline = tokio::time::Instant::now() + WARM_UP_WITHIN;
        loop {
            let (processed, calls) = (self.w.count(PROCESSED).await, self.gateway.calls());
            if processed >= 50 && calls.failed >= 300 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no retries under way: processed={processed} gateway={calls:?} confirmed={}",
                self.confirmed.get()
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
    /// that nothing was lost, doubled or dead-lettered.
    pub async fn finish(&self, name: &str, detail: &str) {
        self.enter("load stopped; waiting for every outcome");
        self.stop_load.cancel();
        let publisher = self.publisher.lock().expect("publisher").take();
        let sent = publisher.expect("finished once").await.expect("publisher");
        let seen = self.events.seen_of(&sent.confirmed, SETTLE_WITHIN).await;
        let (_, duplicated) = seen.ledger.report_with(name, &sent.confirmed, "");
        let missing = sent.confirmed.len() - seen.ledger.completed_of(&sent.confirmed);
        let processed = self.w.count(PROCESSED).await;
        let dlq = dlq_depth(&self.args).await;
        let calls = self.gateway.calls();
        let per_message = |n: f64| n / (sent.confirmed.len().max(1) as f64);
        println!(
            "[{name}] published={} processed={processed} missing={missing} dead_letters={} (dlq_depth={dlq:?}) \
             redeliveries_per_msg={} gateway_calls_per_msg={:.2} (max {}, attempt limit {}) \
             republished={} given_up={} elapsed_s={:.0} {detail}",
            sent.confirmed.len(),
            seen.dead_lettered.len(),
            redeliveries(&self.w)
                .await
                .map_or("n/a".into(), |n| format!("{:.3}", per_message(n))),
            per_message(calls.total as f64),
            calls.max_per_message,
            self.args.max_attempts,
            sent.republished,
            sent.given_up,
            self.started.elapsed().as_secs_f64(),
        );
        assert_eq!(missing, 0, "lost messages");
        assert_eq!(duplicated, 0, "duplicated effects");
        assert_eq!(
            seen.dead_lettered.len(),
            0,
            "dead letters no rule called for"
        );
        assert_eq!(dlq, Some(0), "the dead-letter queue is empty");
        assert_eq!(sent.given_up, 0, "messages the cluster never confirmed");
        assert!(calls.max_per_message <= self.args.max_attempts);
        assert_eq!(processed, sent.confirmed.len() as i64);
        let sources = self
            .w
            .count("SELECT count(*) FROM customer_payment_sources")
            .await;
        assert_eq!(sources, processed, "one saved card per message");
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
    metrics
        .lines()
        .find(|line| line.starts_with("wallet_redeliveries_total"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Ready messages in `<queue>.dlq`, read on the first node that answers.
async fn dlq_depth(args: &WorkerArgs) -> Option<u32> {
    let nodes = Nodes::parse(&args.amqp.amqp_url);
    let (connection, _) = nodes.connect_from(0, "test-dlq-depth").await.ok()?;
    let channel = connection.create_channel().await.ok()?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let queue = format!("{}.dlq", args.amqp.queue);
    let declared = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await;
    let _ = connection.close(200, "counted".into()).await;
    declared.ok().map(|q| q.message_count())
}
