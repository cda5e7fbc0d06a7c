//! Failover on a real three-node RabbitMQ cluster (`AMQP_URL` names all three): under
//! load, the node the worker uses is SIGKILLed, or every node is restarted in turn, and
//! every confirmed message still has exactly one effect. These tests start their own
//! cluster (ports 5681-5683) and run alone (`.config/nextest.toml`).

mod clients;

use crate::helpers::*;
use crate::process::WorkerProcess;
use crate::rabbit_cluster::{NODES, RabbitCluster};
use clients::{ClusterEvents, ClusterPublisher, Sent};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wallet_worker::config::WorkerArgs;

const PROCESSED: &str = "SELECT count(*) FROM processed_messages";
/// Messages per second the publisher offers while the fault lasts.
const RATE: f64 = 100.0;
/// How long every confirmed message has to show its outcome once the load stopped.
const SETTLE_WITHIN: Duration = Duration::from_secs(120);

#[tokio::test]
async fn sigkill_of_the_workers_node_under_load_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let started = Instant::now();
    let (w, args) = spawn_cluster_worker(&cluster).await;
    let events = ClusterEvents::start(&args).await;
    let (publisher, stop_load) = start_load(&args, "ckill");

    w.wait_for_at_least(PROCESSED, 300).await;
    let victim = node_in_use(&w, &cluster, None).await;
    assert_eq!(
        victim, "c1",
        "the worker connects to the first node that answers"
    );
    let before = w.count(PROCESSED).await;
    cluster.kill(victim).await;
    let successor = node_in_use(&w, &cluster, Some(victim)).await;
    w.wait_for_at_least(PROCESSED, before + 300).await;
    cluster.restart(victim).await;
    w.wait_for_at_least(PROCESSED, w.count(PROCESSED).await + 200)
        .await;

    stop_load.cancel();
    let sent = publisher.await.expect("publisher");
    let ledger = events.ledger_of(&sent.confirmed, SETTLE_WITHIN).await;
    let detail = format!(
        "killed={victim} failover_to={successor} {} elapsed_s={:.0}",
        publishing(&sent),
        started.elapsed().as_secs_f64()
    );
    let (lost, duplicated) = ledger.report_with("cluster-kill", &sent.confirmed, &detail);
    assert_accounted(&w, &sent, lost, duplicated).await;
    w.stop().await;
}

#[tokio::test]
async fn a_rolling_restart_of_all_three_nodes_under_load_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let started = Instant::now();
    let (w, args) = spawn_cluster_worker(&cluster).await;
    // A second worker, as a process, competes for the queue from its own node.
    let process = WorkerProcess::start(&args);
    let events = ClusterEvents::start(&args).await;
    let (publisher, stop_load) = start_load(&args, "croll");

    w.wait_for_at_least(PROCESSED, 200).await;
    let mut path = vec![node_in_use(&w, &cluster, None).await];
    for node in NODES {
        cluster.wait_until_safe_to_stop(node).await;
        cluster.restart(node).await;
        let now = node_in_use(&w, &cluster, None).await;
        if path.last() != Some(&now) {
            path.push(now);
        }
    }
    w.wait_for_at_least(PROCESSED, w.count(PROCESSED).await + 200)
        .await;

    stop_load.cancel();
    let sent = publisher.await.expect("publisher");
    let ledger = events.ledger_of(&sent.confirmed, SETTLE_WITHIN).await;
    let detail = format!(
        "restarted=c1,c2,c3 worker_nodes={} {} elapsed_s={:.0}",
        path.join(">"),
        publishing(&sent),
        started.elapsed().as_secs_f64()
    );
    let (lost, duplicated) = ledger.report_with("cluster-rolling", &sent.confirmed, &detail);
    assert_accounted(&w, &sent, lost, duplicated).await;
    assert!(process.terminate().await.success());
    w.stop().await;
}

/// An in-process worker on the cluster whose inbound queue has a replica on every node.
/// (The harness's own channel stays on the shared broker; these tests publish and read
/// events through the cluster clients.)
async fn spawn_cluster_worker(cluster: &RabbitCluster) -> (TestWorker, WorkerArgs) {
    let mut args = test_args();
    args.amqp.amqp_url = cluster.amqp_urls();
    args.prefetch = 32;
    let w = spawn_worker_with(args.clone()).await;
    w.gateway_accepts().await;
    assert_eq!(
        cluster.quorum_members(&args.amqp.queue).await,
        NODES.map(|node| format!("wallet-{node}@localhost")),
        "the inbound queue is replicated on all three nodes"
    );
    (w, args)
}

/// Publishes at [`RATE`] until the returned token is cancelled.
fn start_load(
    args: &WorkerArgs,
    tag: &'static str,
) -> (tokio::task::JoinHandle<Sent>, CancellationToken) {
    let stop = CancellationToken::new();
    let publisher = ClusterPublisher::new(args);
    let task = tokio::spawn(publisher.publish_saves(tag, RATE, stop.clone()));
    (task, stop)
}

/// The node the worker's `/readyz` names, once it names one other than `not`.
async fn node_in_use(w: &TestWorker, cluster: &RabbitCluster, not: Option<&str>) -> &'static str {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = w.admin_get("/readyz", None).await;
        let body: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
        if let Some(url) = body["node"].as_str() {
            assert!(
                url.contains(":***@"),
                "readyz shows the node redacted: {url}"
            );
            let node = cluster.node_of(url);
            if Some(node) != not {
                return node;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker found no other node than {not:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn publishing(sent: &Sent) -> String {
    format!(
        "republished={} given_up={}",
        sent.republished, sent.given_up
    )
}

/// Nothing lost, nothing doubled: in the events and in the store.
async fn assert_accounted(w: &TestWorker, sent: &Sent, lost: usize, duplicated: usize) {
    assert_eq!(lost, 0, "lost messages");
    assert_eq!(duplicated, 0, "duplicated effects");
    assert_eq!(sent.given_up, 0, "messages the cluster never confirmed");
    let processed = w.count(PROCESSED).await;
    let sources = w
        .count("SELECT count(*) FROM customer_payment_sources")
        .await;
    assert_eq!(processed, sent.confirmed.len() as i64);
    assert_eq!(sources, processed, "one saved card per message");
}
