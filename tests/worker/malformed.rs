//! Malformed input (docs/operations.md, failure handling) is dead-lettered at once, body and properties intact,
//! with the `x-wallet-*` headers; the worker keeps going.

use crate::helpers::*;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::AMQPValue;
use serde_json::json;

fn header(delivery: &StoredDeadLetter, name: &str) -> String {
    match delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
    {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::LongLongInt(n)) => n.to_string(),
        other => panic!("header {name} missing or odd: {other:?}"),
    }
}

fn props(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_correlation_id("corr-keep".into())
}

async fn assert_dead_lettered(w: &TestWorker, routing_key: &str, body: &[u8], field: &str) {
    // A pipeline sets message_id to the envelope id; keep that true where there is one.
    let id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| unique("bad"));
    w.publish_raw(routing_key, body, props(&id)).await;
    let dead = w.next_dead_letter().await;
    assert_eq!(dead.data, body, "body kept byte for byte");
    assert_eq!(header(&dead, "x-wallet-error"), "malformed");
    let detail = header(&dead, "x-wallet-error-detail");
    assert!(detail.contains(field), "detail {detail:?} names {field:?}");
    assert_eq!(header(&dead, "x-wallet-attempts"), "1");
    assert_eq!(header(&dead, "x-wallet-original-routing-key"), routing_key);
    let at = header(&dead, "x-wallet-dead-lettered-at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&at).is_ok(),
        "timestamp {at}"
    );
    assert_eq!(dead.properties.message_id().as_ref().unwrap().as_str(), id);
    assert_eq!(
        dead.properties.correlation_id().as_ref().unwrap().as_str(),
        "corr-keep"
    );
    assert_eq!(*dead.properties.delivery_mode(), Some(2));
}

#[tokio::test]
async fn each_malformed_case_is_dead_lettered_with_headers_and_body_intact() {
    let w = spawn_worker().await;
    let valid = order_placed("ord_m", "cus_m", "tok_m", false);
    // Each case is a message of its own (an id of its own): the store keeps one dead
    // letter per message and life.
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = valid.clone();
        v["id"] = json!(unique("msg"));
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    assert_dead_lettered(&w, "order.placed", b"{not json", "body").await;
    assert_dead_lettered(&w, "order.placed", b"{\"id\":\"\xff\xfe\"}", "body").await;
    assert_dead_lettered(
        &w,
        "order.placed",
        &with(&|v| v["type"] = json!("order.cancelled")),
        "type",
    )
    .await;
    assert_dead_lettered(
        &w,
        "order.placed",
        &with(&|v| {
            v.as_object_mut().unwrap().remove("id");
        }),
        "id",
    )
    .await;
    assert_dead_lettered(
        &w,
        "order.placed",
        &with(&|v| {
            v["data"]["order"].as_object_mut().unwrap().remove("id");
        }),
        "data.order.id",
    )
    .await;
    assert_dead_lettered(
        &w,
        "order.placed",
        &with(&|v| v["data"]["order"]["total_amount_cents"] = json!("many")),
        "data.order.total_amount_cents",
    )
    .await;
    assert_dead_lettered(
        &w,
        "order.placed",
        &with(&|v| v["occurred_at"] = json!("yesterday")),
        "occurred_at",
    )
    .await;
    assert_dead_lettered(
        &w,
        "wallet.save",
        &serde_json::to_vec(&wallet_save("")).unwrap(),
        "data.order_id",
    )
    .await;
    assert_dead_lettered(
        &w,
        "wallet.attach",
        &serde_json::to_vec(&envelope("wallet.attach", json!({"order": {"id": "o"}}))).unwrap(),
        "data",
    )
    .await;
    let mut huge = valid.clone();
    huge["id"] = json!(unique("msg"));
    huge["data"]["order"]["number"] = json!("9".repeat(300 * 1024));
    assert_dead_lettered(
        &w,
        "order.placed",
        &serde_json::to_vec(&huge).unwrap(),
        "262144",
    )
    .await;
    w.stop().await;
}

#[tokio::test]
async fn a_message_of_unknown_type_sent_straight_to_the_queue_is_dead_lettered() {
    let w = spawn_worker().await;
    let body = serde_json::to_vec(&envelope("order.cancelled", json!({}))).unwrap();
    w.channel
        .basic_publish(
            "".into(),
            w.args.amqp.queue.as_str().into(),
            BasicPublishOptions::default(),
            &body,
            props("direct-1"),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let dead = w.next_dead_letter().await;
    assert_eq!(dead.data, body);
    assert_eq!(header(&dead, "x-wallet-error"), "malformed");
    assert!(header(&dead, "x-wallet-error-detail").contains("type"));
    w.stop().await;
}

#[tokio::test]
async fn a_message_id_property_that_differs_from_the_envelope_id_is_dead_lettered() {
    let w = spawn_worker().await;
    let body = serde_json::to_vec(&order_placed("ord_p", "cus_p", "tok_p", false)).unwrap();
    w.publish_raw("order.placed", &body, props("some-other-id"))
        .await;
    let dead = w.next_dead_letter().await;
    assert!(header(&dead, "x-wallet-error-detail").contains("message_id"));
    w.stop().await;
}

#[tokio::test]
async fn the_worker_keeps_working_after_malformed_input() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    w.publish_raw("order.placed", b"\x00\x01garbage", props("g1"))
        .await;
    let msg = order_placed("ord_after", "cus_after", "tok_after", true);
    w.publish("order.placed", &msg).await;
    assert_eq!(w.next_event().await.routing_key, "wallet.saved");
    w.stop().await;
}
