//! Broker trouble never makes a message poison (docs/operations.md, poison messages): the
//! worker's connection is closed by the broker (`rabbitmqctl close_connection`, this
//! test's worker only) again and again while one message's gateway call is in flight, so
//! the broker redelivers that message more often than the poison limit. It is still
//! saved once, and nothing is dead-lettered.

use crate::helpers::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wallet_worker::broker::delivery::POISON_DELIVERIES;
use wiremock::matchers::{method, path};
use wiremock::{Match, Mock, Request, ResponseTemplate};

/// Long enough for `rabbitmqctl` to find and close the connection during the call.
const CALL_TAKES: Duration = Duration::from_secs(5);
/// Calls the test may close the connection under. A close that comes too late (a
/// loaded machine runs `rabbitmqctl` slowly) finds the call answered and the message
/// acked: nothing is redelivered, and the test closes under the next call instead.
const MAX_CALLS: u32 = 3 * (POISON_DELIVERIES as u32 + 1);

#[tokio::test]
async fn closing_the_workers_connection_under_a_message_more_often_than_the_poison_limit_does_not_make_it_poison()
 {
    // Each failed call is an attempt, even when the connection closes under it: its
    // retry is committed to the database before the ack, which the close then loses.
    // Enough attempts for every failing call, so only poison could dead-letter it.
    let mut args = test_args();
    args.max_attempts = MAX_CALLS + 2;
    let mut w = spawn_worker_with(args).await;
    // The message's calls fail slowly until it was redelivered often enough.
    let failing = Arc::new(AtomicBool::new(true));
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(WhileFailing(failing.clone()))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Retry-After", "6")
                .set_delay(CALL_TAKES),
        )
        .mount(&w.gateway)
        .await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_trouble", "cus_trouble", "tok_trouble", true);
    w.publish("order.placed", &msg).await;
    let mut calls = 0;
    loop {
        let redeliveries = redeliveries(&w).await;
        if redeliveries > POISON_DELIVERIES as f64 {
            break;
        }
        assert_eq!(
            w.dead_letter_count().await,
            0,
            "dead-lettered after {redeliveries} redeliveries"
        );
        calls += 1;
        assert!(
            calls <= MAX_CALLS,
            "{redeliveries} redeliveries after closing the connection under {MAX_CALLS} calls"
        );
        wait_for_calls(&w, calls).await;
        close_worker_connections(&w.args.amqp.queue).await;
    }
    failing.store(false, Ordering::SeqCst);
    let event = w.event_caused_by(msg["id"].as_str().expect("id")).await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(w.dead_letter_count().await, 0, "nothing was dead-lettered");
    w.stop().await;
}

/// The message's gateway calls, while the test wants them to fail.
struct WhileFailing(Arc<AtomicBool>);

impl Match for WhileFailing {
    fn matches(&self, request: &Request) -> bool {
        self.0.load(Ordering::SeqCst) && is_the_message(request)
    }
}

fn is_the_message(request: &Request) -> bool {
    String::from_utf8_lossy(&request.body).contains("tok_trouble")
}

/// The worker's count of deliveries the broker redelivered.
async fn redeliveries(w: &TestWorker) -> f64 {
    let (_, metrics) = w.admin_get("/metrics", None).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("wallet_redeliveries_total "))
        .map_or(0.0, |n| n.parse().expect("a number"))
}

/// Waits until the gateway has received `n` calls for the message.
async fn wait_for_calls(w: &TestWorker, n: u32) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let calls = w
            .gateway_requests()
            .await
            .iter()
            .filter(|r| is_the_message(r))
            .count();
        if calls >= n as usize {
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
