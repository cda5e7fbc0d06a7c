//! A real three-node RabbitMQ cluster for the failover tests, started and stopped by
//! `tests/cluster/rabbitmq-cluster.sh` (nodes c1, c2, c3 on AMQP ports 5681-5683), apart
//! from the shared broker on 5672. Dropping the handle tears the cluster down, also when
//! the test failed; a cluster left behind by a killed test run is removed by the next
//! `start`.

use std::fs::File;
use std::process::Output;
use std::time::Duration;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/cluster/rabbitmq-cluster.sh"
);
pub const NODES: [&str; 3] = ["c1", "c2", "c3"];
/// How long the cluster may take to make a node safe to stop again.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// The running cluster; one at a time on this machine (its ports are fixed).
pub struct RabbitCluster {
    /// Held while the cluster runs: tests in other processes or threads wait for it.
    _lock: File,
}

impl RabbitCluster {
    /// Starts three nodes, joins c2 and c3 to c1, and waits until all three run.
    pub async fn start() -> RabbitCluster {
        let lock = tokio::task::spawn_blocking(|| {
            let path = std::env::temp_dir().join("wallet-rabbitmq-cluster.lock");
            let file = File::create(path).expect("cluster lock file");
            file.lock().expect("cluster lock");
            file
        })
        .await
        .expect("lock task");
        let cluster = RabbitCluster { _lock: lock };
        let started = std::time::Instant::now();
        script(&["start"]).await;
        println!(
            "[cluster] three nodes up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        cluster
    }

    /// `AMQP_URL` naming the three nodes, c1 first.
    pub fn amqp_urls(&self) -> String {
        NODES.map(url).join(",")
    }

    /// `AMQP_URL` naming the three nodes, `first` first, then the others in order.
    pub fn amqp_urls_from(&self, first: &str) -> String {
        let start = NODES.iter().position(|n| *n == first).expect("a node");
        (0..NODES.len())
            .map(|k| url(NODES[(start + k) % NODES.len()]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose AMQP URL is `url` (redacted or not).
    pub fn node_of(&self, url: &str) -> &'static str {
        NODES
            .into_iter()
            .find(|node| url.contains(&format!(":{}/", amqp_port(node))))
            .unwrap_or_else(|| panic!("{url} is no node of the cluster"))
    }

    /// SIGKILL: the node's VM dies at once, as in a crash or an OOM kill.
    pub async fn kill(&self, node: &str) {
        println!("[cluster] {}", script(&["kill", node]).await.trim());
    }

    /// Stops the node gracefully (if it runs) and starts it again; returns once it runs.
    pub async fn restart(&self, node: &str) {
        println!("[cluster] {}", script(&["restart", node]).await.trim());
    }

    /// Waits until stopping `node` would leave every quorum queue a majority online.
    pub async fn wait_until_safe_to_stop(&self, node: &str) {
        let deadline = tokio::time::Instant::now() + HEALTHY_WITHIN;
        while !try_script(&["quorum-critical", node])
            .await
            .status
            .success()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{node} stayed quorum-critical"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The nodes holding a replica of the quorum queue `queue`.
    pub async fn quorum_members(&self, queue: &str) -> Vec<String> {
        let json = script(&["quorum-members", "c1", queue]).await;
        let members: Vec<serde_json::Value> =
            serde_json::from_str(&json).expect("quorum_status prints JSON");
        let mut names: Vec<String> = members
            .iter()
            .map(|m| m["Node Name"].as_str().expect("node name").to_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        let stopped = std::process::Command::new(SCRIPT).arg("stop").status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("[cluster] could not stop the cluster; the next start removes it");
        }
    }
}

fn amqp_port(node: &str) -> u16 {
    5681 + NODES.iter().position(|n| *n == node).expect("a node") as u16
}

fn url(node: &str) -> String {
    format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp_port(node))
}

/// Runs the script; its stdout, or a panic with its stderr.
async fn script(args: &[&str]) -> String {
    let output = try_script(args).await;
    assert!(
        output.status.success(),
        "rabbitmq-cluster.sh {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn try_script(args: &[&str]) -> Output {
    tokio::process::Command::new(SCRIPT)
        .args(args)
        .output()
        .await
        .expect("tests/cluster/rabbitmq-cluster.sh runs")
}
