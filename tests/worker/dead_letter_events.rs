//! Every dead letter is announced (docs/messages.md, events `wallet.dead_lettered`): once the dead
//! letter is confirmed in `.dlq`, a pipeline waiting for an outcome learns it will not
//! come, with the reason.

use crate::helpers::*;
use lapin::BasicProperties;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

fn json_props(id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id("corr-keep".into());
    match id {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

#[tokio::test]
async fn a_malformed_message_is_announced_with_its_id_and_the_field_at_fault() {
    let mut w = spawn_worker().await;
    let body =
        br#"{"id":"bad-1","type":"wallet.save","occurred_at":"2026-11-27T16:00:00Z","data":{}}"#;
    w.publish_raw("wallet.save", body, json_props(Some("bad-1")))
        .await;
    let dead = w.next_dead_letter().await;
    let event = w.dead_lettered_event(Some("bad-1")).await;
    assert_eq!(event.body["causation_id"], "bad-1");
    let data = event.data();
    assert_eq!(data["message_type"], "wallet.save");
    assert_eq!(data["error"], "malformed");
    assert!(
        data["detail"].as_str().unwrap().contains("data.order_id"),
        "{data}"
    );
    assert_eq!(data["attempts"], 1);
    assert_eq!(data["order_id"], serde_json::Value::Null);
    assert_eq!(dead.data, body.to_vec(), "the body is kept byte for byte");
    w.stop().await;
}

#[tokio::test]
async fn a_message_without_any_id_is_announced_with_null_ids() {
    let mut w = spawn_worker().await;
    w.publish_raw("order.placed", b"\xff not json", json_props(None))
        .await;
    let event = w.dead_lettered_event(None).await;
    assert_eq!(event.body["causation_id"], serde_json::Value::Null);
    assert_eq!(event.data()["error"], "malformed");
    assert_eq!(event.data()["message_type"], "order.placed");
    w.stop().await;
}

#[tokio::test]
async fn a_save_whose_order_never_arrives_is_announced_as_order_not_found() {
    let mut w = spawn_worker().await;
    let msg = wallet_save("ord_never");
    w.publish("wallet.save", &msg).await;
    let id = msg["id"].as_str().unwrap();
    let event = w.dead_lettered_event(Some(id)).await;
    assert_eq!(event.body["correlation_id"], msg["correlation_id"]);
    let data = event.data();
    assert_eq!(data["error"], "order_not_found");
    assert_eq!(data["attempts"], w.args.max_attempts);
    assert_eq!(data["order_id"], "ord_never");
    assert_eq!(data["message_type"], "wallet.save");
    w.stop().await;
}

#[tokio::test]
async fn a_gateway_that_never_answers_is_announced_as_gateway_unavailable() {
    let mut w = spawn_worker().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&w.gateway)
        .await;
    let msg = order_placed("ord_down", "cus_down", "tok_down", true);
    w.publish("order.placed", &msg).await;
    let event = w.dead_lettered_event(msg["id"].as_str()).await;
    let data = event.data();
    assert_eq!(data["error"], "gateway_unavailable");
    assert_eq!(data["order_id"], "ord_down");
    assert_eq!(data["attempts"], w.args.max_attempts);
    // Dead-lettered: no outcome event follows, and the pipeline knows why.
    w.assert_no_event_within(std::time::Duration::from_millis(300))
        .await;
    w.stop().await;
}
