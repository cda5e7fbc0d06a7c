//! Attaching a stored source to a new order: ownership, editability, disabled gateways.

use crate::helpers::*;

/// Saves a card for `customer` and returns the new source id.
async fn saved_source(w: &mut TestWorker, order: &str, customer: &str, token: &str) -> String {
    w.publish("order.placed", &order_placed(order, customer, token, true))
        .await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.saved");
    event.data()["customer_payment_source"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn attach_publishes_wallet_attached_with_the_stored_tokens() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_a1", "cus_a", "tok_a").await;
    let msg = wallet_attach("ord_new", "pending", "cus_a", &source);
    w.publish("wallet.attach", &msg).await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.attached");
    assert_eq!(event.body["causation_id"], msg["id"]);
    let data = event.data();
    assert_eq!(data["order_id"], "ord_new");
    assert_eq!(data["customer_id"], "cus_a");
    assert_eq!(data["customer_payment_source_id"], source.as_str());
    let ps = &data["payment_source"];
    assert_eq!(ps["type"], "external_payments");
    assert_eq!(ps["gateway_id"], GATEWAY_ID);
    assert_eq!(ps["customer_token"], customer_token_for("cus_a").as_str());
    assert_eq!(
        ps["payment_source_token"],
        source_token_for("tok_a").as_str()
    );
    assert_eq!(ps["metadata"]["brand"], "visa");
    w.stop().await;
}

#[tokio::test]
async fn attaching_another_customers_source_is_not_found() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_b1", "cus_owner", "tok_b").await;
    w.publish(
        "wallet.attach",
        &wallet_attach("ord_thief", "pending", "cus_thief", &source),
    )
    .await;
    let foreign = w.next_event().await;
    w.publish(
        "wallet.attach",
        &wallet_attach("ord_thief", "pending", "cus_thief", "NoSuchOne1"),
    )
    .await;
    let unknown = w.next_event().await;
    for event in [&foreign, &unknown] {
        assert_eq!(event.routing_key, "wallet.attach_rejected");
        assert_eq!(event.data()["reason"], "not_found");
        assert!(event.data().get("payment_source").is_none());
    }
    w.stop().await;
}

#[tokio::test]
async fn attaching_to_a_placed_order_is_order_not_editable() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_c1", "cus_c", "tok_c").await;
    for status in ["placed", "approved", "cancelled"] {
        w.publish(
            "wallet.attach",
            &wallet_attach("ord_c9", status, "cus_c", &source),
        )
        .await;
        let event = w.next_event().await;
        assert_eq!(event.routing_key, "wallet.attach_rejected");
        assert_eq!(
            event.data()["reason"],
            "order_not_editable",
            "status {status}"
        );
    }
    // The worker saw ord_c1 placed: a message claiming it is pending is still refused.
    w.publish(
        "wallet.attach",
        &wallet_attach("ord_c1", "pending", "cus_c", &source),
    )
    .await;
    let event = w.next_event().await;
    assert_eq!(event.data()["reason"], "order_not_editable");
    w.stop().await;
}

#[tokio::test]
async fn attaching_a_source_of_a_disabled_gateway_is_gateway_disabled() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let source = saved_source(&mut w, "ord_d1", "cus_d", "tok_d").await;
    wallet_worker::store::gateways::upsert(
        &w.pool,
        &w.keys,
        GATEWAY_ID,
        &format!("{}/token", w.gateway.uri()),
        &wallet_worker::domain::Secret::new(GATEWAY_SECRET),
        false,
    )
    .await
    .unwrap();
    // Workers learn of the change through a notification, within moments.
    let mut rejected = None;
    for attempt in 0..20 {
        let order = format!("ord_d{}", attempt + 2);
        w.publish(
            "wallet.attach",
            &wallet_attach(&order, "pending", "cus_d", &source),
        )
        .await;
        let event = w.next_event().await;
        if event.routing_key == "wallet.attach_rejected" {
            rejected = Some(event);
            break;
        }
    }
    let event = rejected.expect("disabling the gateway takes effect");
    assert_eq!(event.data()["reason"], "gateway_disabled");
    w.stop().await;
}
