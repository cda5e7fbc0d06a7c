//! Replay: through the outbox, back to the original routing key with attempts reset,
//! the row marked replayed and the audit log counting it; every selector and filter;
//! dry runs; what a killed replay left is published by the next run or a worker.

use super::{Dead, dlq_cli, fill, human, put, strings};
use crate::helpers::*;
use futures::StreamExt;
use lapin::Consumer;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use wallet_worker::domain::MessageType;
use wallet_worker::store::audit;
use wallet_worker::store::dead_letters::Filter;
use wallet_worker::store::dead_letters::replay::{self, By};

/// A queue of the test's own that receives a copy of what is published under `key`.
pub async fn spy(w: &TestWorker, key: &str) -> Consumer {
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = w
        .channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .unwrap();
    w.channel
        .queue_bind(
            queue.name().clone(),
            w.args.amqp.exchange.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    w.channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// The message ids waiting in the worker's queue (no worker consumes it), taken off it,
/// sorted.
pub async fn drain(w: &TestWorker) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(got) = w
        .channel
        .basic_get(
            w.args.amqp.queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        ids.push(
            got.delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string(),
        );
    }
    ids.sort();
    ids
}

/// A `wallet.save` of an order not placed yet: retried, then dead-lettered and stored.
async fn dead_letter_save(w: &TestWorker, order_id: &str) -> StoredDeadLetter {
    let msg = wallet_save(order_id);
    w.publish("wallet.save", &msg).await;
    let stored = w.next_dead_letter().await;
    assert_eq!(stored.row.message_id.as_deref(), msg["id"].as_str());
    stored
}

async fn place_order(w: &TestWorker, order_id: &str, customer_id: &str) {
    w.publish(
        "order.placed",
        &order_placed(order_id, customer_id, &unique("tok"), false),
    )
    .await;
    w.wait_for_count(
        &format!("SELECT count(*) FROM orders WHERE id = '{order_id}'"),
        1,
    )
    .await;
}

#[tokio::test]
async fn replaying_a_save_once_its_order_arrived_saves_the_source_and_records_who_did_it() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let stored = dead_letter_save(&w, "ord_late").await;
    let save_id = stored.row.message_id.clone().unwrap();
    assert_eq!(stored.row.error, "order_not_found");
    assert_eq!(stored.row.attempts, Some(w.args.max_attempts as i32));
    place_order(&w, "ord_late", "cus_late").await;
    let mut copies = spy(&w, "wallet.save").await;

    let out = dlq_cli(&w, &["replay", "--id", &save_id, "--actor", "ops-anna"]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("replayed {save_id} to wallet.save\nreplayed 1 of 1 dead letter\n")
    );
    let event = w.event_caused_by(&save_id).await;
    assert_eq!(
        (event.routing_key.as_str(), &event.data()["order_id"]),
        ("wallet.saved", &json!("ord_late"))
    );
    let copy = tokio::time::timeout(PATIENCE, copies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(copy.data, stored.data, "the body byte for byte");
    assert_eq!(
        copy.properties.message_id().as_ref().unwrap().as_str(),
        save_id
    );
    assert_eq!(
        copy.properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    let names: Vec<String> = copy
        .properties
        .headers()
        .clone()
        .unwrap_or_default()
        .inner()
        .keys()
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        names,
        ["x-wallet-replayed-at"],
        "the dead-letter headers are gone"
    );

    assert_eq!(w.dead_letter_count().await, 0);
    let by: String =
        sqlx::query_scalar("SELECT replayed_by FROM dead_letters WHERE message_id = $1")
            .bind(&save_id)
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(by, "ops-anna");
    let (actor, via, action, target, count, finished): (String, String, String, Value, i64, bool) =
        sqlx::query_as(
            "SELECT actor, via, action, target, count, finished_at IS NOT NULL FROM audit_log",
        )
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(
        (actor.as_str(), via.as_str(), action.as_str()),
        ("ops-anna", "cli", "dlq.replay")
    );
    assert_eq!(
        (target, count, finished),
        (json!({ "ids": [save_id] }), 1, true)
    );
    let show = dlq_cli(&w, &["show", &save_id]).await.stdout;
    assert!(show.contains("by ops-anna"), "{show}");
    assert_eq!(dlq_cli(&w, &["list"]).await.stdout, "no dead letters\n");
    w.stop().await;
}

#[tokio::test]
async fn a_replayed_message_that_fails_again_is_a_new_dead_letter_with_its_attempts_reset() {
    let w = spawn_worker().await;
    let first = dead_letter_save(&w, "ord_never").await;
    let out = dlq_cli(&w, &["replay", "--all"]).await;
    assert!(out.success, "{}", out.stderr);
    let again = w.next_dead_letter().await;
    assert_eq!(again.row.message_id, first.row.message_id);
    assert_ne!(again.row.id, first.row.id, "a new life, a new row");
    assert_eq!(again.row.error, "order_not_found");
    assert_eq!(
        again.row.attempts,
        Some(w.args.max_attempts as i32),
        "attempts started again"
    );
    assert!(again.row.headers.get("x-wallet-replayed-at").is_some());
    assert_eq!(w.dead_letter_count().await, 1, "the first one is history");
    w.stop().await;
}

#[tokio::test]
async fn each_selector_and_filter_replays_exactly_the_dead_letters_it_names() {
    let mut w = spawn_worker().await;
    fill(&w, 12).await;
    let summary: Value =
        serde_json::from_str(&dlq_cli(&w, &["summary", "--json"]).await.stdout).unwrap();
    let group = summary["by_group"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["error"] == "gateway_unavailable" && g["type"] == "order.placed")
        .unwrap()["group"]
        .as_str()
        .unwrap()
        .to_owned();
    // Nobody consumes the worker's queue: what a replay publishes stays there to count.
    w.pause_in_process_worker().await;
    let steps: [(Vec<&str>, &[&str]); 7] = [
        (
            vec!["--type", "wallet.save", "--since", "2026-11-01T00:00:06Z"],
            &["d-06", "d-08", "d-10"],
        ),
        (
            vec!["--error", "malformed", "--until", "2026-11-01T00:00:05Z"],
            &["d-01", "d-04"],
        ),
        (vec!["--group", &group], &["d-05", "d-11"]),
        (vec!["--all", "--order", "ord-3"], &["d-03", "d-07"]),
        (vec!["--all", "--customer", "cus-0"], &["d-00"]),
        (vec!["--id", "d-02", "d-99"], &["d-02"]),
        (vec!["--all"], &["d-09"]),
    ];
    for (selector, expected) in steps {
        let mut args = vec!["replay", "--rate", "1000"];
        args.extend(&selector);
        let out = dlq_cli(&w, &args).await;
        assert!(out.success, "{selector:?}: {}", out.stderr);
        assert_eq!(drain(&w).await, strings(expected), "{selector:?}");
    }
    assert!(
        human(&dlq_cli(&w, &["replay", "--id", "d-02"]).await.stderr)
            .ends_with("no dead letter with message id d-02")
    );
    assert_eq!(w.dead_letter_count().await, 0);
    let counts: Vec<i64> =
        sqlx::query_scalar("SELECT count FROM audit_log WHERE action = 'dlq.replay' ORDER BY id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert_eq!(counts, [3, 2, 2, 2, 1, 1, 1, 0]);
    w.stop().await;
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_a_type_the_worker_does_not_take_stays() {
    let w = spawn_worker().await;
    fill(&w, 2).await;
    let odd = Dead {
        id: "odd-1",
        kind: "order.cancelled",
        error: "malformed",
        detail: "unknown message type",
        at: "2026-11-01T00:01:00.000Z",
        data: json!({}),
    };
    put(&w, &[odd]).await;
    let dry = dlq_cli(&w, &["replay", "--all", "--dry-run"]).await;
    assert!(dry.success, "{}", dry.stderr);
    assert_eq!(
        dry.stdout,
        "would replay d-00 to wallet.save\nwould replay d-01 to order.placed\n\
         would replay 2 of 3 dead letters (dry run: nothing changed)\n"
    );
    assert!(
        human(&dry.stderr).contains("would not replay odd-1"),
        "{}",
        dry.stderr
    );
    assert_eq!(w.dead_letter_count().await, 3);
    assert_eq!(w.count("SELECT count(*) FROM audit_log").await, 0);

    let odd = dlq_cli(&w, &["replay", "--type", "order.cancelled"]).await;
    assert!(!odd.success);
    assert!(
        human(&odd.stderr).ends_with("1 dead letter could not be replayed (no queue of the worker takes their type) and stay in the store"),
        "{}",
        odd.stderr
    );
    assert_eq!(w.dead_letter_count().await, 3);
    let none = dlq_cli(&w, &["replay", "--error", "nope"]).await;
    assert_eq!(
        human(&none.stderr),
        "wallet-worker: no dead letter with error nope"
    );
    w.stop().await;
}

/// A replay that died right after its commit: the message is back in the outbox, and
/// nobody is publishing it.
async fn killed_after_commit(w: &TestWorker, id: &str) {
    let audit_id = audit::open(&w.pool, "killed", audit::Via::Cli, "dlq.replay", &json!({}))
        .await
        .unwrap();
    let filter = Filter {
        ids: vec![id.to_owned()],
        ..Filter::default()
    };
    let by = By {
        actor: "killed",
        audit_id,
    };
    let batch = replay::batch(&w.pool, &w.keys, by, &filter, None, 10, &MessageType::NAMES)
        .await
        .unwrap();
    assert_eq!(batch.events.len(), 1);
}

#[tokio::test]
async fn what_a_killed_replay_committed_is_published_by_a_worker_or_the_next_replay() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let mut dead = Vec::new();
    for i in 1..=3 {
        place_order(&w, &format!("ord_k{i}"), &format!("cus_k{i}")).await;
        dead.push(format!("k-{i}"));
    }
    let letters: Vec<Dead<'_>> = dead
        .iter()
        .enumerate()
        .map(|(i, id)| Dead {
            id,
            kind: "wallet.save",
            error: "gateway_unavailable",
            detail: "gateway acme-pay did not answer",
            at: "2026-11-01T00:00:00.000Z",
            data: json!({ "order_id": format!("ord_k{}", i + 1) }),
        })
        .collect();
    put(&w, &letters).await;
    killed_after_commit(&w, "k-1").await;
    // A running worker's relay publishes it once it is stale.
    assert_eq!(w.event_caused_by("k-1").await.routing_key, "wallet.saved");

    w.pause_in_process_worker().await;
    killed_after_commit(&w, "k-2").await;
    sqlx::query("UPDATE outbox SET created_at = now() - interval '1 minute'")
        .execute(&w.pool)
        .await
        .unwrap();
    let out = dlq_cli(&w, &["replay", "--id", "k-3"]).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        drain(&w).await,
        strings(&["k-2", "k-3"]),
        "the next replay published what the killed one left first"
    );
    assert_eq!(w.count("SELECT count(*) FROM outbox").await, 0);
    w.stop().await;
}
