//! Killed mid-way: a worker killed while it ingests (between a batch's commit and its
//! ack, and at a random point) and a replay killed with its worker still end with every
//! dead letter stored exactly once and every replayed message having exactly one
//! effect. What was published twice is counted and printed.

use super::upgrade::{announced_ids, announcements};
use super::{Dead, body_of, dead_letter_headers, put};
use crate::helpers::*;
use crate::process::WorkerProcess;
use futures::future::try_join_all;
use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use tokio::io::AsyncBufReadExt;

#[tokio::test]
async fn a_worker_killed_mid_ingestion_leaves_every_dead_letter_stored_exactly_once() {
    let mut w = spawn_worker().await;
    w.pause_in_process_worker().await;
    let announced = announcements(&w.channel, &w.args.amqp.exchange).await;
    let n = 3000;
    let ids: Vec<String> = (0..n).map(|i| format!("kill-{i:04}")).collect();
    let dlq = w.topology().dead_letter_queue();
    let mut confirms = Vec::new();
    for id in &ids {
        let dead = Dead {
            id,
            kind: "order.placed",
            error: "malformed",
            detail: "body: not JSON",
            at: "2026-11-01T00:00:00.000Z",
            data: json!({}),
        };
        let props = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_headers(dead_letter_headers(&dead));
        confirms.push(
            w.channel
                .basic_publish(
                    "".into(),
                    dlq.as_str().into(),
                    Default::default(),
                    &body_of(&dead),
                    props,
                )
                .await
                .unwrap(),
        );
    }
    try_join_all(confirms).await.unwrap();

    // Dies right after its first batch committed, before acking it.
    let crash = [("FAILPOINTS", "intake.after_commit=return")];
    let mut first = WorkerProcess::start_with_env(&w.args, &crash);
    assert!(!first.exited_within(PATIENCE).await.success());
    let stored = w.count("SELECT count(*) FROM dead_letters").await;
    assert!(
        stored > 0 && stored < n as i64,
        "died mid-ingestion: {stored} of {n}"
    );
    // Killed at whatever point it reached (batches slowed down so that it is mid-way).
    let slow = [("FAILPOINTS", "intake.batch=return(200)")];
    let second = WorkerProcess::start_with_env(&w.args, &slow);
    w.wait_for_at_least("SELECT count(*) FROM dead_letters", stored + 1)
        .await;
    second.kill().await;
    let killed_at = w.count("SELECT count(*) FROM dead_letters").await;
    assert!(
        killed_at < n as i64,
        "killed mid-ingestion: {killed_at} of {n}"
    );

    let last = WorkerProcess::start(&w.args);
    w.wait_for_count("SELECT count(*) FROM dead_letters", n as i64)
        .await;
    assert_eq!(
        w.count("SELECT count(DISTINCT message_id) FROM dead_letters")
            .await,
        n as i64,
        "every dead letter exactly once"
    );
    let copies = announced_ids(announced, n).await;
    assert_eq!(copies.len(), n, "every dead letter announced");
    let doubled: u32 = copies.values().map(|c| c - 1).sum();
    println!(
        "[kill-ingestion] dead_letters={n} stored_before_crash={stored} stored_before_kill={killed_at} announcements={} doubled={doubled}",
        copies.values().sum::<u32>()
    );
    assert!(last.terminate().await.success());
    w.stop().await;
}

#[tokio::test]
async fn a_replay_killed_midway_with_its_worker_still_gives_each_message_one_effect() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let n: usize = 160;
    let ids: Vec<String> = (0..n).map(|i| format!("rk-{i:03}")).collect();
    for i in 0..n {
        let order = order_placed(
            &format!("ord_rk{i}"),
            &format!("cus_rk{}", i % 10),
            &format!("tok_rk{i}"),
            false,
        );
        w.publish("order.placed", &order).await;
    }
    w.wait_for_count("SELECT count(*) FROM orders", n as i64)
        .await;
    let orders: Vec<String> = (0..n).map(|i| format!("ord_rk{i}")).collect();
    let dead: Vec<Dead<'_>> = (0..n)
        .map(|i| Dead {
            id: &ids[i],
            kind: "wallet.save",
            error: "gateway_unavailable",
            detail: "gateway acme-pay did not answer",
            at: "2026-11-01T00:00:00.000Z",
            data: json!({ "order_id": orders[i] }),
        })
        .collect();
    put(&w, &dead).await;
    w.pause_in_process_worker().await;
    let spy_queue = copies_queue(&w).await;

    let worker = WorkerProcess::start(&w.args);
    let mut replay = tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
        .args([
            "dlq",
            "replay",
            "--all",
            "--rate",
            "40",
            "--actor",
            "kill-test",
        ])
        .env("DATABASE_URL", &w.args.db.database_url)
        .env("AMQP_URL", AMQP_URL)
        .env("WALLET_ENCRYPTION_KEYS", TEST_KEYS)
        .env("WALLET_EXCHANGE", &w.args.amqp.exchange)
        .env("WALLET_QUEUE", &w.args.amqp.queue)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(replay.stdout.take().unwrap()).lines();
    for _ in 0..30 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("the replay makes progress")
            .unwrap()
            .expect("the replay still runs");
        assert!(line.starts_with("replayed rk-"), "{line}");
    }
    replay.kill().await.unwrap();
    worker.kill().await;
    let replayed_at_kill = w
        .count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL")
        .await;
    assert!(
        replayed_at_kill < n as i64,
        "killed mid-replay: {replayed_at_kill} of {n}"
    );

    // Another worker (its relay publishes what the killed replay committed), and the
    // replay again for the rest.
    let worker = WorkerProcess::start(&w.args);
    let again = super::dlq_cli(&w, &["replay", "--all"]).await;
    assert!(again.success, "{}", again.stderr);
    w.wait_for_count("SELECT count(*) FROM customer_payment_sources", n as i64)
        .await;
    w.wait_for_count(
        "SELECT count(*) FROM processed_messages WHERE message_id LIKE 'rk-%'",
        n as i64,
    )
    .await;
    w.wait_for_count("SELECT count(*) FROM outbox", 0).await;
    assert_eq!(w.dead_letter_count().await, 0);
    assert_eq!(
        w.count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL")
            .await,
        n as i64
    );
    // Events are published at least once: a worker killed between the broker's confirm
    // and the outbox delete has its event published again by the next one, under the
    // same event id. One outcome per message is one event id per causation.
    let mut saved: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    while saved.len() < n {
        let event = w.next_event().await;
        assert_eq!(event.routing_key, "wallet.saved");
        saved
            .entry(event.body["causation_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(event.body["id"].as_str().unwrap().to_owned());
    }
    assert!(
        saved.values().all(|ids| ids.len() == 1),
        "one outcome each: {saved:?}"
    );
    let copies = count_copies(&w, &spy_queue).await;
    for id in &ids {
        assert!(
            copies.get(id).is_some_and(|c| *c >= 1),
            "{id} never published"
        );
    }
    let published: u32 = copies.values().sum();
    println!(
        "[kill-replay] replayed={n} replayed_at_kill={replayed_at_kill} copies_published={published} doubled={} gateway_calls={}",
        published as usize - n,
        w.gateway_requests().await.len()
    );
    assert!(worker.terminate().await.success());
    w.stop().await;
}

/// A queue of the test's own, bound to `wallet.save`, read with `basic.get` once every
/// publication is over.
async fn copies_queue(w: &TestWorker) -> String {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let name = unique("test-copies");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    w.channel
        .queue_declare(name.as_str().into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    w.channel
        .queue_bind(
            name.as_str().into(),
            w.args.amqp.exchange.as_str().into(),
            "wallet.save".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    name
}

/// Copies of each message id in `queue`, taken off it.
async fn count_copies(w: &TestWorker, queue: &str) -> BTreeMap<String, u32> {
    let mut copies = BTreeMap::new();
    while let Some(got) = w
        .channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let id = got
            .delivery
            .properties
            .message_id()
            .clone()
            .unwrap()
            .to_string();
        *copies.entry(id).or_insert(0) += 1;
    }
    copies
}
