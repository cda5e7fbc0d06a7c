//! The per-gateway circuit breaker: it opens after repeated transient failures, parks
//! messages without spending their attempts, and recovers.
//!
//! Counted, not timed: with `MAX_ATTEMPTS` attempts a message can fail at most
//! `MAX_ATTEMPTS - 1` times and still not be dead-lettered, so the messages can be
//! delivered at most `MESSAGES * (MAX_ATTEMPTS - 1)` times in all unless waiting for
//! the open circuit spends no attempt and makes no call. Seeing many more deliveries,
//! no dead letter and no more gateway calls than the failed attempts can make shows
//! exactly that, however fast or slow the machine is.

use crate::helpers::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const MESSAGES: usize = 5;
const MAX_ATTEMPTS: u32 = 3;
/// Calls one attempt makes at most: the first and the client's quick retries.
const CALLS_PER_ATTEMPT: usize = 1 + 3;
/// Delayed retries the messages go through while the circuit is open: far more than
/// the failed attempts they can afford (`MESSAGES * (MAX_ATTEMPTS - 1)`).
const PARKED_RETRIES: u64 = 5 * MESSAGES as u64;

#[tokio::test]
async fn the_circuit_opens_parks_messages_and_recovers_after_a_reset() {
    let mut args = test_args();
    args.circuit_threshold = 2;
    args.circuit_cool_down_ms = 60_000;
    args.max_attempts = MAX_ATTEMPTS;
    let mut w = spawn_worker_with(args).await;
    let outage = Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&w.gateway)
        .await;
    let messages: Vec<_> = (0..MESSAGES)
        .map(|i| order_placed(&format!("ord_cb{i}"), "cus_cb", &format!("tok_cb{i}"), true))
        .collect();
    for msg in &messages {
        w.publish("order.placed", msg).await;
    }
    wait_until_circuit_is(&w, "open").await;
    // The messages keep coming back from the retry queue while the circuit is open.
    wait_for_retries(&w, PARKED_RETRIES).await;
    assert_eq!(
        w.dead_letter_count().await,
        0,
        "waiting for an open circuit spends no attempt"
    );
    let calls = w.gateway_requests().await.len();
    let affordable = MESSAGES * (MAX_ATTEMPTS as usize - 1) * CALLS_PER_ATTEMPT;
    assert!(
        calls <= affordable,
        "{calls} gateway calls: more than the failed attempts can make ({affordable}), so some came while the circuit was open"
    );

    drop(outage);
    w.gateway_accepts().await;
    assert!(
        wallet_worker::store::gateways::reset_circuit(&w.pool, GATEWAY_ID)
            .await
            .unwrap()
    );
    for _ in &messages {
        let event = w.next_event().await;
        assert_eq!(event.routing_key, "wallet.saved");
    }
    wait_until_circuit_is(&w, "closed").await;
    w.stop().await;
}

/// Polls `gateway list`'s view of the circuit until it says `state`.
async fn wait_until_circuit_is(w: &TestWorker, state: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = wallet_worker::store::gateways::list(&w.pool).await.unwrap();
        if list[0].circuit.as_str() == state {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit is still {}, expected {state}",
            list[0].circuit
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls `/metrics` until at least `n` delayed retries of `order.placed` were scheduled.
async fn wait_for_retries(w: &TestWorker, n: u64) {
    let series = r#"wallet_messages_total{type="order.placed",outcome="retry_scheduled"}"#;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = w.admin_get("/metrics", None).await;
        let retries: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0);
        if retries >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{retries} delayed retries, expected at least {n}: the messages stopped coming back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
