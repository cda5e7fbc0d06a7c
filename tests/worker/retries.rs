//! Delayed retries: a transiently failing message waits in the broker (not in a consumer
//! slot), its attempt count travels with it, and it is dead-lettered when attempts run out.

use crate::helpers::*;
use lapin::types::AMQPValue;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

fn header(delivery: &StoredDeadLetter, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn a_gateway_outage_longer_than_the_quick_retries_is_retried_later_and_saved() {
    let mut w = spawn_worker().await;
    // 4 calls per attempt (1 + 3 quick retries): 6 failures span two attempts.
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(6)
        .mount(&w.gateway)
        .await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_r", "cus_r", "tok_r", true),
    )
    .await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.saved");
    let calls = w.gateway_requests().await;
    assert_eq!(calls.len(), 7);
    let key = calls[0].headers.get("Idempotency-Key").unwrap();
    assert!(
        calls
            .iter()
            .all(|c| c.headers.get("Idempotency-Key").unwrap() == key)
    );
    w.stop().await;
}

#[tokio::test]
async fn a_gateway_that_never_recovers_is_dead_lettered_after_max_attempts() {
    let w = spawn_worker().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&w.gateway)
        .await;
    let msg = order_placed("ord_dead", "cus_dead", "tok_dead", true);
    let body = serde_json::to_vec(&msg).unwrap();
    w.publish("order.placed", &msg).await;
    let dead = w.next_dead_letter().await;
    assert_eq!(dead.data, body);
    assert_eq!(
        header(&dead, "x-wallet-error").as_deref(),
        Some("gateway_unavailable")
    );
    assert_eq!(header(&dead, "x-wallet-attempts").as_deref(), Some("4"));
    assert_eq!(
        header(&dead, "x-wallet-original-routing-key").as_deref(),
        Some("order.placed")
    );
    assert!(
        header(&dead, "x-wallet-error-detail")
            .unwrap()
            .contains("503")
    );
    assert_eq!(
        w.gateway_requests().await.len(),
        16,
        "4 attempts of 4 calls"
    );
    w.stop().await;
}

#[tokio::test]
async fn wallet_save_before_its_order_placed_waits_and_then_saves() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let save = wallet_save("ord_late");
    w.publish("wallet.save", &save).await;
    w.publish(
        "order.placed",
        &order_placed("ord_late", "cus_late", "tok_late", false),
    )
    .await;
    let event = w.event_caused_by(save["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    w.stop().await;
}

#[tokio::test]
async fn wallet_save_for_an_order_never_placed_is_dead_lettered_as_order_not_found() {
    let w = spawn_worker().await;
    let save = wallet_save("ord_never");
    w.publish("wallet.save", &save).await;
    let dead = w.next_dead_letter().await;
    assert_eq!(
        header(&dead, "x-wallet-error").as_deref(),
        Some("order_not_found")
    );
    assert_eq!(header(&dead, "x-wallet-attempts").as_deref(), Some("4"));
    assert_eq!(
        header(&dead, "x-wallet-original-routing-key").as_deref(),
        Some("wallet.save")
    );
    assert_eq!(dead.data, serde_json::to_vec(&save).unwrap());
    w.stop().await;
}

#[tokio::test]
async fn a_waiting_message_holds_no_consumer_slot() {
    let mut args = test_args();
    args.prefetch = 1;
    args.retry_base_ms = 2_000;
    args.retry_max_ms = 2_000;
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    // This one waits 2 s in a retry queue...
    w.publish("wallet.save", &wallet_save("ord_not_yet")).await;
    // ...while these go through the single consumer slot.
    for i in 0..5 {
        let msg = order_placed(
            &format!("ord_free{i}"),
            "cus_free",
            &format!("tok_free{i}"),
            true,
        );
        w.publish("order.placed", &msg).await;
        let event = w.next_event().await;
        assert_eq!(event.body["causation_id"], msg["id"]);
    }
    let parked: i64 = w
        .count("SELECT count(*) FROM processed_messages WHERE message_type = 'wallet.save'")
        .await;
    assert_eq!(
        parked, 0,
        "the waiting wallet.save is still parked, not processed"
    );
    w.stop().await;
}
