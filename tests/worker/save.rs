//! Saving a payment source to the wallet: via `order.placed`, via `wallet.save`, dedupe,
//! retries against the gateway and the refusals decided before any call.

use crate::helpers::*;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

#[tokio::test]
async fn order_placed_with_the_flag_saves_the_source_and_publishes_wallet_saved() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_1", "cus_1", "tok_1a2b3c", true);
    w.publish("order.placed", &msg).await;

    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(event.body["causation_id"], msg["id"]);
    assert_eq!(event.body["correlation_id"], msg["correlation_id"]);
    assert_ne!(event.body["id"], msg["id"]);
    let data = event.data();
    assert_eq!(data["order_id"], "ord_1");
    assert_eq!(data["customer_id"], "cus_1");
    assert_eq!(data["created"], true);
    let source = &data["customer_payment_source"];
    let id = source["id"].as_str().expect("source id");
    assert_eq!(id.len(), 10);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(source["gateway_id"], GATEWAY_ID);
    assert_eq!(source["name"], "Visa ending in 4242");
    assert_eq!(source["metadata"]["last4"], "4242");
    assert!(
        event.body.to_string().find("tok_1a2b3c").is_none(),
        "no token in wallet.saved"
    );

    // Stored sealed: the row holds no token, and its sealed tokens open to the gateway's.
    let (key_id, customer, source): (String, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT key_id, customer_token_sealed, payment_source_token_sealed
         FROM customer_payment_sources WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&w.pool)
    .await
    .expect("stored source");
    let table = wallet_worker::store::keys::SOURCES;
    let open = |sealed: &[u8], column| {
        w.keys
            .open_secret(&key_id, sealed, table.row(column, id))
            .expect("the stored token opens")
            .expose()
            .to_owned()
    };
    assert_eq!(
        open(&customer, "customer_token"),
        customer_token_for("cus_1")
    );
    assert_eq!(
        open(&source, "payment_source_token"),
        source_token_for("tok_1a2b3c")
    );
    let row: String =
        sqlx::query_scalar("SELECT s::text FROM customer_payment_sources s WHERE id = $1")
            .bind(id)
            .fetch_one(&w.pool)
            .await
            .expect("row as text");
    assert!(!row.contains("tok_1a2b3c") && !row.contains(&customer_token_for("cus_1")));
    w.stop().await;
}

#[tokio::test]
async fn order_placed_without_the_flag_records_the_order_and_calls_no_gateway() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_nf", "cus_nf", "tok_nf", false),
    )
    .await;
    // A later save of another order proves the first was handled before it.
    let msg = order_placed("ord_nf2", "cus_nf", "tok_nf2", true);
    w.publish("order.placed", &msg).await;
    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(
        w.count("SELECT count(*) FROM orders WHERE id = 'ord_nf'")
            .await,
        1
    );
    assert_eq!(w.gateway_requests().await.len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn wallet_save_saves_the_source_of_an_order_already_placed() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_ws", "cus_ws", "tok_ws", false),
    )
    .await;
    let save = wallet_save("ord_ws");
    w.publish("wallet.save", &save).await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(event.body["causation_id"], save["id"]);
    assert_eq!(event.data()["order_id"], "ord_ws");
    assert_eq!(event.data()["created"], true);
    w.stop().await;
}

#[tokio::test]
async fn the_same_message_id_twice_has_one_effect_and_one_event() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_dup", "cus_dup", "tok_dup", true);
    w.publish("order.placed", &msg).await;
    w.publish("order.placed", &msg).await;
    let first = w.next_event().await;
    assert_eq!(first.routing_key, "wallet.saved");
    // A marker message published after both: once its event arrives, both were handled.
    let marker = order_placed("ord_marker", "cus_dup", "tok_marker", true);
    w.publish("order.placed", &marker).await;
    let next = w.next_event().await;
    assert_eq!(
        next.body["causation_id"], marker["id"],
        "the duplicate produced no event"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        2
    );
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM processed_messages WHERE message_id = '{}'",
            msg["id"].as_str().unwrap()
        ))
        .await,
        1
    );
    w.stop().await;
}

#[tokio::test]
async fn the_same_card_twice_reuses_the_stored_source() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_c1", "cus_card", "tok_same", true),
    )
    .await;
    let first = w.next_event().await;
    w.publish(
        "order.placed",
        &order_placed("ord_c2", "cus_card", "tok_same", true),
    )
    .await;
    let second = w.next_event().await;
    assert_eq!(first.data()["created"], true);
    assert_eq!(second.data()["created"], false);
    assert_eq!(
        first.data()["customer_payment_source"]["id"],
        second.data()["customer_payment_source"]["id"]
    );
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        1
    );
    w.stop().await;
}

#[tokio::test]
async fn two_503s_then_200_saves_after_three_calls_with_one_idempotency_key() {
    let mut w = spawn_worker().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&w.gateway)
        .await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_503", "cus_503", "tok_503", true),
    )
    .await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.saved");
    let calls = w.gateway_requests().await;
    assert_eq!(calls.len(), 3);
    let keys: Vec<_> = calls
        .iter()
        .map(|r| {
            r.headers
                .get("Idempotency-Key")
                .expect("key")
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one Idempotency-Key: {keys:?}"
    );
    assert!(
        calls.iter().all(|r| r.body == calls[0].body),
        "same signed bytes every time"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_4xx_is_refused_once_without_retry() {
    let mut w = spawn_worker().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "success": false, "data": { "error": { "code": "card_declined", "message": "Declined" } } })))
        .mount(&w.gateway)
        .await;
    w.publish(
        "order.placed",
        &order_placed("ord_422", "cus_422", "tok_422", true),
    )
    .await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.save_failed");
    assert_eq!(event.data()["reason"], "gateway_refused");
    assert_eq!(event.data()["customer_id"], "cus_422");
    assert!(
        event.data()["message"]
            .as_str()
            .unwrap()
            .contains("card_declined")
    );
    assert_eq!(w.gateway_requests().await.len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn success_false_with_200_is_refused_once_without_retry() {
    let mut w = spawn_worker().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": false, "data": { "error": { "code": "unsupported_card", "message": "No" } } })))
        .mount(&w.gateway)
        .await;
    w.publish(
        "order.placed",
        &order_placed("ord_sf", "cus_sf", "tok_sf", true),
    )
    .await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.save_failed");
    assert_eq!(event.data()["reason"], "gateway_refused");
    assert_eq!(w.gateway_requests().await.len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn a_guest_order_is_refused_before_any_gateway_call() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let mut msg = order_placed("ord_guest", "cus_guest", "tok_guest", true);
    msg["data"]["order"]["guest"] = json!(true);
    w.publish("order.placed", &msg).await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.save_failed");
    assert_eq!(event.data()["reason"], "guest_customer");
    let mut no_customer = order_placed("ord_guest2", "x", "tok_guest2", true);
    no_customer["data"]["order"]
        .as_object_mut()
        .unwrap()
        .remove("customer");
    w.publish("order.placed", &no_customer).await;
    let event = w.next_event().await;
    assert_eq!(event.data()["reason"], "guest_customer");
    assert!(w.gateway_requests().await.is_empty());
    w.stop().await;
}

#[tokio::test]
async fn an_unknown_gateway_is_refused_before_any_gateway_call() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let mut msg = order_placed("ord_ug", "cus_ug", "tok_ug", true);
    msg["data"]["order"]["payment_source"]["gateway_id"] = json!("nobody-pay");
    w.publish("order.placed", &msg).await;
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.save_failed");
    assert_eq!(event.data()["reason"], "unknown_gateway");
    assert!(w.gateway_requests().await.is_empty());
    w.stop().await;
}

#[tokio::test]
async fn an_unsupported_payment_source_is_refused_before_any_gateway_call() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let mut msg = order_placed("ord_us", "cus_us", "tok_us", true);
    msg["data"]["order"]["payment_source"] = json!({ "type": "stripe_payments", "id": "sp_1" });
    w.publish("order.placed", &msg).await;
    let event = w.next_event().await;
    assert_eq!(event.data()["reason"], "unsupported_payment_source");
    assert!(w.gateway_requests().await.is_empty());
    w.stop().await;
}

#[tokio::test]
async fn the_gateway_stub_verifies_the_signature_of_every_call() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_sig", "cus_sig", "tok_sig", true),
    )
    .await;
    assert_eq!(w.next_event().await.routing_key, "wallet.saved");
    let calls = w.gateway_requests().await;
    assert_eq!(calls.len(), 1);
    let header = calls[0]
        .headers
        .get("X-CommerceLayer-Signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(header, signature(&calls[0].body));
    assert_eq!(
        calls[0].headers.get("Content-Type").unwrap(),
        "application/json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(doc["data"]["type"], "external_payments");
    assert_eq!(doc["data"]["attributes"]["payment_source_token"], "tok_sig");
    // A gateway registered with another secret refuses: the signature really is checked.
    // (Workers learn of the change through a notification, within moments.)
    register_gateway_with_secret(&w, "other-secret").await;
    let mut refused = None;
    for attempt in 0..20 {
        let order = format!("ord_sig{attempt}");
        let token = format!("tok_sig{attempt}");
        w.publish(
            "order.placed",
            &order_placed(&order, "cus_sig", &token, true),
        )
        .await;
        let event = w.next_event().await;
        if event.routing_key == "wallet.save_failed" {
            refused = Some(event);
            break;
        }
    }
    let event = refused.expect("the new secret takes effect");
    assert_eq!(event.data()["reason"], "gateway_refused");
    w.stop().await;
}

async fn register_gateway_with_secret(w: &TestWorker, secret: &str) {
    wallet_worker::store::gateways::upsert(
        &w.pool,
        &w.keys,
        GATEWAY_ID,
        &format!("{}/token", w.gateway.uri()),
        &wallet_worker::domain::Secret::new(secret),
        true,
    )
    .await
    .unwrap();
}
