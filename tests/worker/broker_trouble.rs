//! Broker trouble never makes a message poison (docs/operations.md, poison messages): the
//! worker's connection is closed by the broker (`rabbitmqctl close_connection`, this
//! test's worker only) again and again while one message's gateway call is in flight, so
//! the broker redelivers that message more often than the poison limit. It is still
//! saved once, and nothing is dead-lettered.

use crate::helpers::*;
use std::time::Duration;
use wallet_worker::broker::delivery::POISON_DELIVERIES;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

/// Long enough for `rabbitmqctl` to find and close the connection during the call.
const CALL_TAKES: Duration = Duration::from_secs(5);

#[tokio::test]
async fn closing_the_workers_connection_under_a_message_more_often_than_the_poison_limit_does_not_make_it_poison()
 {
    let closes = usize::try_from(POISON_DELIVERIES).expect("small") + 1;
    // Each failed call is an attempt, even when the connection closes under it: its
    // retry is committed to the database before the ack, which the close then loses.
    // Enough attempts for every failing call, so only poison could dead-letter it.
    let mut args = test_args();
    args.max_attempts = u32::try_from(closes).expect("small") + 2;
    let mut w = spawn_worker_with(args).await;
    // The message's calls fail slowly until the connection was closed under each of them.
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains("tok_trouble"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "6")
                .set_delay(CALL_TAKES),
        )
        .up_to_n_times(closes as u64 + 1)
        .mount(&w.gateway)
        .await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_trouble", "cus_trouble", "tok_trouble", true);
    w.publish("order.placed", &msg).await;
    for close in 1..=closes {
        wait_for_calls(&w, close).await;
        close_worker_connections(&w.args.amqp.queue).await;
    }
    let event = w.event_caused_by(msg["id"].as_str().expect("id")).await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(w.dead_letter_count().await, 0, "nothing was dead-lettered");
    let (_, metrics) = w.admin_get("/metrics", None).await;
    let redeliveries: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("wallet_redeliveries_total "))
        .and_then(|n| n.parse().ok())
        .expect("the redeliveries counter");
    assert!(redeliveries >= closes as f64, "{redeliveries} redeliveries");
    w.stop().await;
}

/// Waits until the gateway has received `n` calls for the message.
async fn wait_for_calls(w: &TestWorker, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let calls = w
            .gateway_requests()
            .await
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("tok_trouble"))
            .count();
        if calls >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{calls} calls, waiting for {n}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Closes, through the broker, the connections of the worker consuming `queue` (they
/// are named after it): other tests' connections are left alone. Waits until the worker
/// is connected: a second copy of the message may have called the gateway while the
/// worker was still reconnecting after the previous close.
async fn close_worker_connections(queue: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let pids = loop {
        let listed = rabbitmqctl(&["list_connections", "pid", "client_properties"]).await;
        let pids: Vec<String> = listed
            .lines()
            .filter(|line| line.contains(&format!("consumer of {queue}")))
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect();
        if !pids.is_empty() {
            break pids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker's connection is listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for pid in pids {
        rabbitmqctl(&["close_connection", &pid, "test: broker trouble"]).await;
    }
}

async fn rabbitmqctl(args: &[&str]) -> String {
    let output = tokio::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
