//! Decisions hold at commit (docs/messages.md, wallet rules): a change committed between a handler's
//! reads and its commit turns the outcome into the matching rejection, never into an
//! event that disagrees with the store. The `commit.before` fail point holds one
//! message between its handler and its commit while the other change commits.

use crate::helpers::*;
use std::time::Duration;
use wallet_worker::faults;
use wallet_worker::store::gateways;

/// Saves a card for `customer` and returns the new source id.
async fn saved_source(w: &mut TestWorker, order: &str, customer: &str, token: &str) -> String {
    let msg = order_placed(order, customer, token, true);
    w.publish("order.placed", &msg).await;
    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    event.data()["customer_payment_source"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Publishes `msg` and waits until it is held before its commit.
async fn publish_held(w: &TestWorker, routing_key: &str, msg: &serde_json::Value) {
    faults::configure(
        "commit.before",
        &format!("return({})", msg["id"].as_str().unwrap()),
    );
    w.publish(routing_key, msg).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !faults::reached("commit.before") {
        assert!(tokio::time::Instant::now() < deadline, "never held");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn disable_gateway(w: &TestWorker) {
    let url = format!("{}/token", w.gateway.uri());
    let secret = wallet_worker::domain::Secret::new(GATEWAY_SECRET);
    gateways::upsert(&w.pool, &w.keys, GATEWAY_ID, &url, &secret, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_order_placed_committing_during_an_attach_turns_it_into_order_not_editable() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_d1", "cus_d", "tok_d").await;
    let attach = wallet_attach("ord_race", "pending", "cus_d", &source);
    publish_held(&w, "wallet.attach", &attach).await;

    // The order is placed while the attach waits between its reads and its commit.
    let placed = order_placed("ord_race", "cus_d", "tok_other", false);
    w.publish("order.placed", &placed).await;
    w.wait_for_count(
        "SELECT count(*) FROM orders WHERE id = 'ord_race' AND placed_at IS NOT NULL",
        1,
    )
    .await;
    faults::release("commit.before");

    let event = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.attach_rejected");
    assert_eq!(event.data()["reason"], "order_not_editable");
    assert_eq!(
        w.count("SELECT count(*) FROM orders WHERE id = 'ord_race' AND customer_payment_source_id IS NOT NULL")
            .await,
        0,
        "the placed order keeps its own payment source"
    );
    w.assert_no_event_within(Duration::from_millis(300)).await;
    w.stop().await;
}

#[tokio::test]
async fn a_gateway_disabled_during_an_attach_turns_it_into_gateway_disabled() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_g1", "cus_g", "tok_g").await;
    let attach = wallet_attach("ord_g2", "pending", "cus_g", &source);
    publish_held(&w, "wallet.attach", &attach).await;
    disable_gateway(&w).await;
    faults::release("commit.before");

    let event = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.attach_rejected");
    assert_eq!(event.data()["reason"], "gateway_disabled");
    assert_eq!(
        w.count("SELECT count(*) FROM orders WHERE id = 'ord_g2'")
            .await,
        0
    );
    w.stop().await;
}

#[tokio::test]
async fn a_gateway_disabled_during_a_save_stores_nothing_and_says_gateway_disabled() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let save = order_placed("ord_s1", "cus_s", "tok_s", true);
    // Held after the gateway answered, before the commit.
    publish_held(&w, "order.placed", &save).await;
    disable_gateway(&w).await;
    faults::release("commit.before");

    let event = w.event_caused_by(save["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.save_failed");
    assert_eq!(event.data()["reason"], "gateway_disabled");
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        0
    );
    // The order itself is recorded: that part of the message does not depend on the gateway.
    assert_eq!(
        w.count("SELECT count(*) FROM orders WHERE id = 'ord_s1'")
            .await,
        1
    );
    w.stop().await;
}

#[tokio::test]
async fn a_removal_committing_during_an_attach_turns_it_into_not_found() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_r1", "cus_r", "tok_r").await;
    let attach = wallet_attach("ord_r2", "pending", "cus_r", &source);
    publish_held(&w, "wallet.attach", &attach).await;
    let remove = envelope(
        "wallet.remove",
        serde_json::json!({ "customer_id": "cus_r", "customer_payment_source_id": source }),
    );
    w.publish("wallet.remove", &remove).await;
    let removed = w.event_caused_by(remove["id"].as_str().unwrap()).await;
    assert_eq!(removed.routing_key, "wallet.removed");
    faults::release("commit.before");

    let event = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.attach_rejected");
    assert_eq!(event.data()["reason"], "not_found");
    w.stop().await;
}
