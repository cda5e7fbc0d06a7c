//! Dead letters the broker made itself (a quorum queue's delivery limit) carry only
//! `x-death`: the dlq commands explain them from it instead of showing blanks.

use super::entries;
use crate::helpers::*;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use wallet_worker::broker::dlq::{self, Selection};

#[tokio::test]
async fn a_delivery_limit_dead_letter_is_explained_from_x_death() {
    let mut w = spawn_worker().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (exchange, queue) = (format!("test-dl-x-{id}"), format!("test-dl-q-{id}"));
    w.cleanup.queue(&queue).exchange(&exchange);
    w.channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
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
    let dlq_name = w.topology().dead_letter_queue();
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq_name.as_str().into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    w.channel
        .queue_declare(queue.as_str().into(), durable, args)
        .await
        .unwrap();
    w.channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "wallet.save".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let message = wallet_save("ord_crashes");
    let message_id = message["id"].as_str().unwrap().to_owned();
    let props = BasicProperties::default()
        .with_message_id(message_id.as_str().into())
        .with_delivery_mode(2);
    w.channel
        .basic_publish(
            exchange.as_str().into(),
            "wallet.save".into(),
            Default::default(),
            &serde_json::to_vec(&message).unwrap(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A consumer that crashes on it every time: handed back until the limit.
    let mut deliveries = 0;
    while let Some(got) = w
        .channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .unwrap()
    {
        deliveries += 1;
        w.channel
            .basic_nack(
                got.delivery.delivery_tag,
                BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    w.wait_for_dead_letters(1).await;

    let entry = &entries(&w).await[0];
    assert_eq!(entry.message_id, message_id);
    assert_eq!(entry.error.as_deref(), Some("delivery_limit"));
    assert_eq!(
        entry.routing_key.as_deref(),
        Some("wallet.save"),
        "from x-death routing-keys"
    );
    // RabbitMQ 3.10 drops `x-delivery-count` when it dead-letters: attempts is then
    // x-death's count (times dead-lettered), not the deliveries it took.
    assert!(deliveries >= 2);
    assert_eq!(entry.attempts, Some(1), "{:?}", entry.headers());
    assert!(entry.error_detail.as_deref().unwrap().contains(&queue));
    assert!(entry.dead_lettered_time().is_some(), "from x-death time");
    let summary = dlq::summary(&w.connection, &w.topology()).await.unwrap();
    assert_eq!(summary.by_error.get("delivery_limit"), Some(&1));
    let mut listed = Vec::new();
    dlq::list(
        &w.connection,
        &w.topology(),
        &Selection::of_error("delivery_limit"),
        None,
        |e| listed.push(e.message_id),
    )
    .await
    .unwrap();
    assert_eq!(listed, [message_id]);
    let _ = w
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    w.stop().await;
}

#[tokio::test]
async fn the_depth_gauge_follows_the_dead_letter_queue() {
    let w = spawn_worker().await;
    for id in ["g-1", "g-2"] {
        let before = w.dead_letter_count().await;
        let props = BasicProperties::default().with_message_id(id.into());
        w.publish_raw("order.placed", b"{not json", props).await;
        w.wait_for_dead_letters(before + 1).await;
    }
    let dlq_name = w.topology().dead_letter_queue();
    let expected = format!("wallet_dlq_depth{{queue=\"{dlq_name}\"}} 2");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, metrics) = w.admin_get("/metrics", None).await;
        if metrics.contains(&expected) {
            assert!(
                metrics.contains("wallet_dead_letters_total{kind=\"malformed\"}"),
                "{metrics}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {expected} in {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    w.stop().await;
}
