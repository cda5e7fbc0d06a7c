//! Failover on a real three-node RabbitMQ cluster (`AMQP_URL` names all three), while
//! the gateway fails most calls transiently so that many messages wait in delayed
//! retries (in Postgres): the worker's first node (where it declared both queues, so it
//! holds their leaders) SIGKILLed for 45 s, every node restarted in turn, and the node
//! leading the work queue and `.dlq` killed while the worker stays on another, with
//! malformed messages among the load so the dead-letter path works through the outage.
//! Every confirmed message still has exactly one effect, the dead letters are exactly
//! the malformed messages (each once in `.dlq`), and no message calls the gateway more
//! often than its attempts allow. Each run prints one accounting line. These tests
//! start their own cluster (ports 5681-5683) and run alone (`.config/nextest.toml`).

mod clients;
mod flaky;
mod run;

use crate::helpers::*;
use crate::process::WorkerProcess;
use crate::rabbit_cluster::{NODES, RabbitCluster};
use run::Run;
use std::time::Duration;

/// How long a killed node stays down.
const OUTAGE: Duration = Duration::from_secs(45);
/// One message in this many is malformed in the leader-kill run: a dead letter by rule.
const MALFORMED_EVERY: usize = 20;

#[tokio::test]
async fn sigkill_of_the_workers_node_under_load_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let urls = cluster.amqp_urls();
    let run = Run::start(cluster, urls, "ckill").await;
    run.within_budget(async {
        run.enter("waiting for delayed retries");
        run.wait_for_retries_under_way().await;
        let victim = node_in_use(&run, None).await;
        assert_eq!(
            victim, "c1",
            "the worker connects to the first node that answers"
        );
        let outage = outage_of(&run, victim).await;
        let successor = node_in_use(&run, Some(victim)).await;
        let detail = format!("killed={victim} failover_to={successor} {outage}");
        run.finish("cluster-kill", &detail).await;
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn a_rolling_restart_of_all_three_nodes_under_load_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let urls = cluster.amqp_urls();
    let run = Run::start(cluster, urls, "croll").await;
    // A second worker, as a process, competes for the queue from its own node. It
    // shares the gateway's circuit (in Postgres): its threshold must be as high.
    let threshold = run.args.circuit_threshold.to_string();
    let process =
        WorkerProcess::start_with_env(&run.args, &[("WALLET_CIRCUIT_THRESHOLD", &threshold)]);
    run.within_budget(async {
        run.enter("waiting for delayed retries");
        run.wait_for_retries_under_way().await;
        let mut path = vec![node_in_use(&run, None).await];
        let hand_backs = run.hand_backs();
        for node in NODES {
            run.enter(format!("waiting until {node} is safe to stop"));
            run.cluster.wait_until_safe_to_stop(node).await;
            run.enter(format!("restarting {node}"));
            run.cluster.restart(node).await;
            let now = node_in_use(&run, None).await;
            if path.last() != Some(&now) {
                path.push(now);
            }
        }
        run.enter("waiting for progress after the restarts");
        run.wait_for_progress(200).await;
        let detail = format!(
            "restarted=c1,c2,c3 worker_nodes={} hand_backs_during_restarts={}",
            path.join(">"),
            run.hand_backs() - hand_backs
        );
        run.finish("cluster-rolling", &detail).await;
    })
    .await;
    assert!(process.terminate().await.success());
    run.stop().await;
}

/// With delayed retries in Postgres, no queue holds waiting retries: the node that
/// matters after the worker's own is the one leading the work queue (whose
/// at-least-once dead-lettering is the broker's last resort) and `.dlq` (where the
/// worker parks dead letters). Both are declared through c1, so c1 leads them; the
/// worker uses c2, and one message in [`MALFORMED_EVERY`] is malformed.
#[tokio::test]
async fn killing_the_node_that_leads_the_work_and_dead_letter_queues_loses_and_doubles_nothing() {
    let cluster = RabbitCluster::start().await;
    let urls = cluster.amqp_urls_from("c2");
    let run = Run::start_declared_on(cluster, urls, "cretry", "c1", MALFORMED_EVERY).await;
    run.within_budget(async {
        run.enter("waiting for delayed retries");
        run.wait_for_retries_under_way().await;
        assert_eq!(node_in_use(&run, None).await, "c2");
        let outage = outage_of(&run, "c1").await;
        assert_eq!(
            node_in_use(&run, None).await,
            "c2",
            "the worker stayed on c2"
        );
        run.finish(
            "cluster-queue-leaders",
            &format!("killed=c1 worker_on=c2 {outage}"),
        )
        .await;
    })
    .await;
    run.stop().await;
}

/// Kills `node`, keeps it down for [`OUTAGE`], restarts it and waits for progress;
/// returns what the worker did meanwhile, for the accounting line.
async fn outage_of(run: &Run, node: &'static str) -> String {
    let hand_backs = run.hand_backs();
    let published = run.gateway.calls().messages;
    let delayed = run.delayed_now().await;
    run.enter(format!("{node} killed with {delayed} retries waiting"));
    run.cluster.kill(node).await;
    tokio::time::sleep(OUTAGE).await;
    let during = run.hand_backs() - hand_backs;
    let messages = (run.gateway.calls().messages - published).max(1);
    run.enter(format!("restarting {node}"));
    run.cluster.restart(node).await;
    run.enter("waiting for progress after the restart");
    run.wait_for_progress(200).await;
    format!(
        "delayed_at_kill={delayed} down_s={} hand_backs_during_outage={during} ({:.2} per message that arrived meanwhile)",
        OUTAGE.as_secs(),
        during as f64 / messages as f64
    )
}

/// The node the worker's `/readyz` names, once it names one other than `not`.
async fn node_in_use(run: &Run, not: Option<&str>) -> &'static str {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, body) = run.w.admin_get("/readyz", None).await;
        let body: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
        if let Some(url) = body["node"].as_str() {
            assert!(
                url.contains(":***@"),
                "readyz shows the node redacted: {url}"
            );
            let node = run.cluster.node_of(url);
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
