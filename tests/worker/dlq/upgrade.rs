//! Upgrade (docs/operations.md, upgrading): a worker started on a deployment whose
//! `.dlq` already holds dead letters — the worker's own and the broker's — stores every
//! one of them, once, and announces each.

use super::intake::broker_dead_letter;
use super::{Dead, body_of, dead_letter_headers};
use crate::helpers::*;
use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde_json::json;
use std::collections::BTreeMap;
use wallet_worker::broker::{self, Topology};

/// Ready messages in `queue`.
async fn depth(channel: &lapin::Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .expect("the queue exists")
        .message_count()
}

/// The queue's depth once it reached `expected`, or as it stands after the patience.
async fn depth_reaching(channel: &lapin::Channel, queue: &str, expected: u32) -> u32 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = depth(channel, queue).await;
        if now >= expected || tokio::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_worker_started_on_a_full_intake_queue_stores_every_dead_letter_once() {
    let args = test_args();
    // Removes the topology this test declares itself, and the helper queues, even when
    // it fails before the worker (which cleans up after itself) starts.
    let mut cleanup = Cleanup::of_worker(&args);
    let topology = Topology::new(
        &args.amqp.exchange,
        &args.amqp.queue,
        args.retry_base_ms,
        args.retry_max_ms,
    );
    let dlq = topology.dead_letter_queue();
    // The deployment before the upgrade: its topology, dead letters waiting in `.dlq`.
    let connection = broker::connect(AMQP_URL, "test").await.unwrap();
    topology.declare(&connection).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let announced = announcements(&channel, &args.amqp.exchange).await;
    let own = 300;
    let ids: Vec<String> = (0..own).map(|i| format!("up-{i:03}")).collect();
    for id in &ids {
        let dead = Dead {
            id,
            kind: "wallet.save",
            error: "order_not_found",
            detail: "order o has not been placed yet",
            at: "2026-10-01T00:00:00.000Z",
            data: json!({ "order_id": "o" }),
        };
        let props = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_headers(dead_letter_headers(&dead));
        channel
            .basic_publish(
                "".into(),
                dlq.as_str().into(),
                Default::default(),
                &body_of(&dead),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let mut helpers = Vec::new();
    let mut all = ids.clone();
    for i in 0..3 {
        let save = wallet_save(&format!("ord_limit_{i}"));
        all.push(save["id"].as_str().unwrap().to_owned());
        let helper = broker_dead_letter(&channel, &dlq, "wallet.save", &save).await;
        cleanup.queue(&helper);
        helpers.push(helper);
    }
    // A quorum queue's message count catches up with its dead-lettering a moment later.
    assert_eq!(
        depth_reaching(&channel, &dlq, own as u32 + 3).await,
        own as u32 + 3,
        "all waiting before the worker starts"
    );

    let w = spawn_worker_with(args).await;
    w.wait_for_dead_letters(own as u32 + 3).await;
    let kinds: BTreeMap<String, i64> =
        sqlx::query_as("SELECT error, count(*) FROM dead_letters GROUP BY error")
            .fetch_all(&w.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(
        kinds,
        BTreeMap::from([
            ("delivery_limit".to_owned(), 3),
            ("order_not_found".to_owned(), own as i64)
        ])
    );
    let distinct = w
        .count("SELECT count(DISTINCT message_id) FROM dead_letters")
        .await;
    assert_eq!(distinct, own as i64 + 3, "each once");
    let copies = announced_ids(announced, all.len()).await;
    for id in &all {
        assert!(
            copies.get(id).is_some_and(|n| *n >= 1),
            "{id} was not announced"
        );
    }
    let doubled: u32 = copies.values().map(|n| n - 1).sum();
    println!(
        "[upgrade] dead_letters={} announcements={} doubled={doubled}",
        all.len(),
        copies.values().sum::<u32>()
    );
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while depth(&channel, &dlq).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the intake queue stays full"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for queue in helpers {
        let _ = channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    w.stop().await;
}

/// A queue of the test's own bound to `wallet.dead_lettered` on `exchange`.
pub async fn announcements(channel: &lapin::Channel, exchange: &str) -> lapin::Consumer {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "wallet.dead_lettered".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// How many times each message id was announced, once `expected` distinct ids were.
pub async fn announced_ids(
    mut consumer: lapin::Consumer,
    expected: usize,
) -> BTreeMap<String, u32> {
    let mut copies: BTreeMap<String, u32> = BTreeMap::new();
    while copies.len() < expected {
        let delivery = tokio::time::timeout(PATIENCE, consumer.next())
            .await
            .expect("an announcement within the patience window")
            .unwrap()
            .unwrap();
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        crate::schemas::assert_valid("wallet.dead_lettered", &event);
        let id = event["data"]["message_id"].as_str().unwrap().to_owned();
        *copies.entry(id).or_default() += 1;
    }
    copies
}

/// A database that a version without the dead-letter store migrated (every migration
/// but 0007, which came in with a lower number than the sealing and retry migrations): the
/// read-only commands call it out of date, and `migrate` (what `run` does) adds 0007.
#[tokio::test]
async fn a_database_migrated_without_0007_gets_it_applied() {
    let args = test_args();
    let mut cleanup = Cleanup::of_worker(&args);
    let url = args.db.database_url.clone();
    cleanup.database_of(&url);
    let pool = wallet_worker::store::connect_and_migrate(&url, 2, Some(&test_keys()))
        .await
        .expect("migrated");
    for sql in [
        "DROP TABLE dead_letters, dead_letter_groups, audit_log",
        "ALTER TABLE outbox DROP COLUMN properties, DROP COLUMN headers",
        "DELETE FROM _sqlx_migrations WHERE version = 7",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(latest, 10, "as a version without the store left it");
    pool.close().await;
    let err = wallet_worker::store::connect_existing(&url)
        .await
        .expect_err("0007 is missing");
    assert!(
        err.to_string().contains("older than this wallet-worker"),
        "{err:#}"
    );

    let pool = wallet_worker::store::connect_and_migrate(&url, 2, Some(&test_keys()))
        .await
        .expect("migrated again");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 7, 8, 9, 10]);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .expect("the store exists");
    assert_eq!(stored, 0);
    pool.close().await;
    wallet_worker::store::connect_existing(&url)
        .await
        .expect("up to date")
        .close()
        .await;
}
