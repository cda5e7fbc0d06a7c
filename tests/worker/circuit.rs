//! The per-gateway circuit breaker: it opens after repeated transient failures, parks
//! messages without spending their attempts, and recovers.

use crate::helpers::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn the_circuit_opens_parks_messages_and_recovers_after_a_reset() {
    let mut args = test_args();
    args.circuit_threshold = 2;
    args.circuit_cool_down_ms = 60_000;
    args.max_attempts = 3;
    let mut w = spawn_worker_with(args).await;
    let outage = Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&w.gateway)
        .await;
    let messages: Vec<_> = (0..5)
        .map(|i| order_placed(&format!("ord_cb{i}"), "cus_cb", &format!("tok_cb{i}"), true))
        .collect();
    for msg in &messages {
        w.publish("order.placed", msg).await;
    }
    // Wait until the circuit is open, as `gateway list` shows it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let list = wallet_worker::store::gateways::list(&w.pool).await.unwrap();
        if list[0].circuit == "open" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "circuit never opened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Attempts already under way finish their quick retries; after that, silence.
    let mut calls_when_opened = w.gateway_requests().await.len();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
        let calls = w.gateway_requests().await.len();
        if calls == calls_when_opened {
            break;
        }
        calls_when_opened = calls;
    }
    // Parked messages cycle through the retry queue without calling the gateway and
    // without being dead-lettered (attempts are not spent while the circuit is open).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        w.gateway_requests().await.len(),
        calls_when_opened,
        "no calls while open"
    );
    let dlq = w.dead_letter_count().await;
    assert_eq!(dlq, 0, "open circuit does not dead-letter");

    drop(outage);
    w.gateway_accepts().await;
    assert!(
        wallet_worker::store::gateways::reset_circuit(&w.pool, GATEWAY_ID)
            .await
            .unwrap()
    );
    let mut saved = 0;
    while saved < messages.len() {
        let event = w.next_event().await;
        assert_eq!(event.routing_key, "wallet.saved");
        saved += 1;
    }
    assert_eq!(
        wallet_worker::store::gateways::list(&w.pool).await.unwrap()[0].circuit,
        "closed"
    );
    w.stop().await;
}
