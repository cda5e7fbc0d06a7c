//! The intake: every message that reaches `.dlq` — the worker's own, the broker's
//! (`x-death` only) and another producer's — becomes one row, announced once by
//! `wallet.dead_lettered`; a redelivered intake message adds nothing.

use super::{Dead, put, put_raw};
use crate::helpers::*;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use serde_json::json;

/// Makes the broker dead-letter `message` itself into the queue `dlq`: a quorum queue
/// with a delivery limit of 1 dead-letters into it, and a consumer hands the message
/// back until the limit. Returns that queue's name, for the caller to delete.
pub async fn broker_dead_letter(
    channel: &lapin::Channel,
    dlq: &str,
    routing_key: &str,
    message: &serde_json::Value,
) -> String {
    let queue = format!("test-dl-q-{}", uuid::Uuid::new_v4().simple());
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, args)
        .await
        .unwrap();
    // Published as if routed by `routing_key`: x-death records the routing key used.
    let exchange = format!("test-dl-x-{}", uuid::Uuid::new_v4().simple());
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            auto_delete,
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let props = BasicProperties::default()
        .with_message_id(message["id"].as_str().unwrap().into())
        .with_delivery_mode(2);
    channel
        .basic_publish(
            exchange.as_str().into(),
            routing_key.into(),
            Default::default(),
            &serde_json::to_vec(message).unwrap(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    while let Some(got) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        channel
            .basic_nack(got.delivery.delivery_tag, requeue)
            .await
            .unwrap();
    }
    queue
}

#[tokio::test]
async fn every_kind_of_dead_letter_becomes_one_row_announced_once() {
    let mut w = spawn_worker().await;
    // The worker's own: malformed.
    let body =
        br#"{"id":"own-1","type":"wallet.save","occurred_at":"2026-11-27T16:00:00Z","data":{}}"#;
    let props = BasicProperties::default()
        .with_message_id("own-1".into())
        .with_correlation_id("corr-own".into());
    w.publish_raw("wallet.save", body, props).await;
    let own = w.next_dead_letter().await;
    assert_eq!(own.data, body.to_vec(), "byte for byte");
    assert_eq!(
        (own.row.error.as_str(), own.row.attempts),
        ("malformed", Some(1))
    );
    assert_eq!(own.row.routing_key.as_deref(), Some("wallet.save"));
    assert_eq!(
        wallet_worker::broker::headers::text(&own.properties, "x-wallet-original-routing-key")
            .as_deref(),
        Some("wallet.save")
    );
    let event = w.dead_lettered_event(Some("own-1")).await;
    assert_eq!(event.body["causation_id"], "own-1");
    assert_eq!(event.body["correlation_id"], "corr-own");
    assert_eq!(event.data()["error"], "malformed");

    // The broker's own: only x-death says why.
    let save = wallet_save("ord_crashes");
    let save_id = save["id"].as_str().unwrap().to_owned();
    let dlq = w.topology().dead_letter_queue();
    let queue = broker_dead_letter(&w.channel, &dlq, "wallet.save", &save).await;
    let broker = w.next_dead_letter().await;
    assert_eq!(broker.row.message_id.as_deref(), Some(save_id.as_str()));
    assert_eq!(broker.row.error, "delivery_limit");
    assert_eq!(
        broker.row.routing_key.as_deref(),
        Some("wallet.save"),
        "from x-death"
    );
    assert_eq!(
        broker.row.order_id.as_deref(),
        Some("ord_crashes"),
        "from the body"
    );
    assert!(broker.row.detail.contains(&queue), "{}", broker.row.detail);
    // RabbitMQ drops `x-delivery-count` when it dead-letters: attempts is x-death's count.
    assert_eq!(broker.row.attempts, Some(1));
    let event = w.dead_lettered_event(Some(&save_id)).await;
    assert_eq!(event.data()["error"], "delivery_limit");
    assert_eq!(event.data()["message_type"], "wallet.save");
    assert_eq!(event.data()["order_id"], "ord_crashes");

    // Another producer's, without any header.
    put_raw(
        &w,
        br#"{"id":"foreign-1","type":"order.cancelled"}"#,
        BasicProperties::default(),
    )
    .await;
    let foreign = w.next_dead_letter().await;
    assert_eq!(
        foreign.row.message_id.as_deref(),
        Some("foreign-1"),
        "the envelope id"
    );
    assert_eq!(foreign.row.error, "unknown");
    assert_eq!(foreign.row.routing_key.as_deref(), Some("order.cancelled"));
    let event = w.dead_lettered_event(Some("foreign-1")).await;
    assert_eq!(event.data()["message_type"], "order.cancelled");
    put_raw(
        &w,
        b"\x00 neither json nor named",
        BasicProperties::default(),
    )
    .await;
    let nameless = w.next_dead_letter().await;
    assert_eq!(
        (nameless.row.message_id, nameless.row.routing_key),
        (None, None)
    );
    let event = w.dead_lettered_event(None).await;
    assert_eq!(event.body["causation_id"], serde_json::Value::Null);
    assert_eq!(event.data()["message_type"], "unknown");

    assert_eq!(w.dead_letter_count().await, 4);
    let _ = w
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    w.stop().await;
}

#[tokio::test]
async fn a_dead_letter_delivered_twice_in_one_life_is_one_row_and_one_event() {
    let mut w = spawn_worker().await;
    let dead = |id, at| Dead {
        id,
        kind: "wallet.save",
        error: "order_not_found",
        detail: "order o_1 has not been placed yet",
        at,
        data: json!({ "order_id": "o_1" }),
    };
    // The same message dead-lettered twice before anyone replayed it (a worker that
    // died between its publish to `.dlq` and its ack), then a marker.
    put(&w, &[dead("twice", "2026-11-01T00:00:00.000Z")]).await;
    super::put_raw(
        &w,
        &super::body_of(&dead("twice", "2026-11-01T00:00:09.000Z")),
        BasicProperties::default()
            .with_message_id("twice".into())
            .with_headers(super::dead_letter_headers(&dead(
                "twice",
                "2026-11-01T00:00:09.000Z",
            ))),
    )
    .await;
    put(&w, &[dead("marker", "2026-11-01T00:00:10.000Z")]).await;
    // Events leave the relay in the order the intake stored them: a second event for
    // `twice` would have come before the marker's.
    let mut announced = Vec::new();
    loop {
        let event = w.dead_lettered_event_any().await;
        let id = event.data()["message_id"].as_str().unwrap().to_owned();
        announced.push(id.clone());
        if id == "marker" {
            break;
        }
    }
    assert_eq!(announced, ["twice", "marker"]);
    assert_eq!(
        w.count("SELECT count(*) FROM dead_letters WHERE message_id = 'twice'")
            .await,
        1
    );
    // Once replayed, the message has a new life: its next death is a new dead letter.
    let mut replayed = super::dead_letter_headers(&dead("twice", "2026-11-02T00:00:00.000Z"));
    replayed.insert(
        "x-wallet-replayed-at".into(),
        AMQPValue::LongString("2026-11-01T12:00:00.000Z".into()),
    );
    let props = BasicProperties::default()
        .with_message_id("twice".into())
        .with_headers(replayed);
    put_raw(&w, &super::body_of(&dead("twice", "")), props).await;
    w.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE message_id = 'twice'",
        2,
    )
    .await;
    assert_eq!(
        w.dead_lettered_event_any().await.data()["message_id"],
        "twice"
    );
    w.stop().await;
}

#[tokio::test]
async fn the_store_gauge_counts_by_kind_and_the_intake_depth_is_still_exported() {
    let w = spawn_worker().await;
    for id in ["g-1", "g-2"] {
        let props = BasicProperties::default().with_message_id(id.into());
        w.publish_raw("order.placed", b"{not json", props).await;
    }
    w.wait_for_dead_letters(2).await;
    let dlq_name = w.topology().dead_letter_queue();
    let stored = r#"wallet_dead_letters{kind="malformed"} 2"#;
    let depth = format!("wallet_dlq_depth{{queue=\"{dlq_name}\"}} 0");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = w.admin_get("/metrics", None).await;
        if metrics.contains(stored) && metrics.contains(&depth) {
            assert!(
                metrics.contains(r#"wallet_dead_letters{kind="delivery_limit"} 0"#),
                "{metrics}"
            );
            assert!(
                metrics.contains(r#"wallet_dead_letters_ingested_total{kind="malformed"} 2"#),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {stored} and {depth} in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    w.stop().await;
}
