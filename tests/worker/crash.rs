//! Crash safety: SIGKILLs at arbitrary points, among three worker replicas competing
//! for the queue, leave every message with exactly one effect.

use crate::accounting::Ledger;
use crate::helpers::*;
use crate::process::WorkerProcess;
use std::time::Duration;

/// Worker processes consuming the queue side by side.
const REPLICAS: usize = 3;

/// Messages in the crash test; `WALLET_TEST_CRASH_MESSAGES` runs it bigger.
fn message_count() -> usize {
    env_or("WALLET_TEST_CRASH_MESSAGES", 2_000)
}

/// SIGKILLs in the crash test; `WALLET_TEST_CRASH_KILLS` kills more often.
fn kill_count() -> usize {
    env_or("WALLET_TEST_CRASH_KILLS", 10)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn sigkills_among_three_worker_replicas_lose_and_double_nothing() {
    let (count, kills) = (message_count(), kill_count());
    let mut args = test_args();
    args.prefetch = 64;
    let mut w = spawn_worker_with(args.clone()).await;
    w.pause_in_process_worker().await;
    w.gateway_accepts().await;
    let mut replicas: Vec<WorkerProcess> =
        (0..REPLICAS).map(|_| WorkerProcess::start(&args)).collect();

    let publisher = {
        let harness = PublishHarness::new(&w).await;
        tokio::spawn(async move { harness.publish_saves("crash", count).await })
    };
    // Kill a replica, in turn, each time another share of the messages has been
    // processed, so every kill lands while messages are in flight; a fresh process
    // takes its place at once.
    for kill in 0..kills {
        let target = ((kill + 1) * count / (kills + 2)) as i64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while w.count("SELECT count(*) FROM processed_messages").await < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no progress before kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let victim = kill % REPLICAS;
        let dead = std::mem::replace(&mut replicas[victim], WorkerProcess::start(&args));
        dead.kill().await;
    }
    let published = publisher.await.expect("publisher");
    let ledger = Ledger::collect(&mut w, &published, Duration::from_secs(120)).await;
    let detail = format!("replicas={REPLICAS} sigkills={kills}");
    let (lost, duplicated) = ledger.report_with("crash", &published, &detail);
    assert_eq!(lost, 0, "lost messages");
    assert_eq!(duplicated, 0, "duplicated effects");
    assert_eq!(
        w.count("SELECT count(*) FROM processed_messages").await,
        count as i64
    );
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        count as i64
    );
    for replica in replicas {
        assert!(replica.terminate().await.success());
    }
    w.stop().await;
}

/// Publishes from its own connection so the test can watch the worker meanwhile.
struct PublishHarness {
    channel: lapin::Channel,
    exchange: String,
    _connection: lapin::Connection,
}

impl PublishHarness {
    async fn new(w: &TestWorker) -> Self {
        let connection = wallet_worker::broker::connect(AMQP_URL, "test-publisher")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        PublishHarness {
            channel,
            exchange: w.args.amqp.exchange.clone(),
            _connection: connection,
        }
    }

    async fn publish_saves(self, tag: &str, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        let mut confirms = Vec::with_capacity(count);
        for i in 0..count {
            let msg = bulk_save(tag, i);
            let id = msg["id"].as_str().unwrap().to_owned();
            let properties = lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2)
                .with_message_id(id.as_str().into());
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    "order.placed".into(),
                    Default::default(),
                    &serde_json::to_vec(&msg).unwrap(),
                    properties,
                )
                .await
                .unwrap();
            confirms.push(confirm);
            ids.push(id);
        }
        for confirm in confirms {
            assert!(matches!(
                confirm.await.unwrap(),
                lapin::Confirmation::Ack(None)
            ));
        }
        ids
    }
}
