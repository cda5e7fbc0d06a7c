//! Replay: back to the original routing key with attempts reset, acked only after the
//! broker confirmed; selections, dry runs and an interrupted replay.

use super::{dead_letter, dead_letter_save, entries, listed_ids, place_order, replay};
use crate::helpers::*;
use futures::StreamExt;
use lapin::Consumer;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use wallet_worker::broker::dlq::{self, ReplayOptions, Replayed, Selection};
use wallet_worker::broker::headers;

/// A queue of the test's own that receives a copy of what is published under `key`.
async fn spy(w: &TestWorker, key: &str) -> Consumer {
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
    let exchange = w.args.amqp.exchange.as_str();
    w.channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
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

/// Waits for one `wallet.saved` caused by each of `ids`, in whatever order they come.
async fn saved_events_for(w: &mut TestWorker, ids: &[String]) {
    let mut waiting: Vec<&String> = ids.iter().collect();
    while !waiting.is_empty() {
        let event = w.next_event().await;
        let cause = event.body["causation_id"].as_str().unwrap_or_default();
        assert_eq!(event.routing_key, "wallet.saved", "caused by {cause}");
        let before = waiting.len();
        waiting.retain(|id| id.as_str() != cause);
        assert_eq!(
            waiting.len() + 1,
            before,
            "one event per message; unexpected {cause}"
        );
    }
}

#[tokio::test]
async fn replaying_a_save_once_its_order_arrived_saves_the_source_and_empties_the_queue() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let save_id = dead_letter_save(&w, "ord_late").await;
    let entry = &entries(&w).await[0];
    assert_eq!(entry.error.as_deref(), Some("order_not_found"));
    assert_eq!(entry.attempts, Some(i64::from(w.args.max_attempts)));
    let original_body = entry.raw_body().to_vec();
    place_order(&w, "ord_late", "cus_late").await;
    let mut copies = spy(&w, "wallet.save").await;

    let selection = Selection::ids(vec![save_id.clone()]);
    let report = replay(&w, &selection, ReplayOptions::default()).await;
    let expected = Replayed {
        message_id: save_id.clone(),
        routing_key: "wallet.save".into(),
    };
    assert_eq!(
        (report.total, report.replayed, report.failed.len()),
        (1, vec![expected], 0)
    );

    let event = w.event_caused_by(&save_id).await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(event.data()["order_id"], "ord_late");
    assert_eq!(w.dead_letter_count().await, 0);
    let copy = tokio::time::timeout(PATIENCE, copies.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(copy.data, original_body, "same body");
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
    assert!(
        names.iter().all(
            |n| (!n.starts_with("x-wallet-") || n == "x-wallet-replayed-at")
                && !n.starts_with("x-death")
        ),
        "{names:?}"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_replayed_message_starts_again_with_its_attempts_reset() {
    let w = spawn_worker().await;
    let save_id = dead_letter_save(&w, "ord_never").await;
    let report = replay(&w, &Selection::all(), ReplayOptions::default()).await;
    assert_eq!(report.replayed.len(), 1);
    // Still no order: the replay goes through every attempt again before dying again.
    let again = w.next_dead_letter().await;
    assert_eq!(
        again.properties.message_id().as_ref().unwrap().as_str(),
        save_id
    );
    assert_eq!(
        headers::text(&again.properties, headers::ERROR).as_deref(),
        Some("order_not_found")
    );
    assert_eq!(
        headers::integer(&again.properties, headers::ATTEMPTS),
        Some(i64::from(w.args.max_attempts))
    );
    w.stop().await;
}

#[tokio::test]
async fn a_dry_run_replay_reports_what_it_would_do_and_changes_nothing() {
    let w = spawn_worker().await;
    for id in ["dry-1", "dry-2", "dry-3"] {
        dead_letter(&w, "order.placed", b"{not json", Some(id)).await;
    }
    let before = entries(&w).await;
    let options = ReplayOptions {
        dry_run: true,
        ..Default::default()
    };
    let report = replay(&w, &Selection::all(), options).await;
    assert!(report.dry_run);
    let would: Vec<_> = report
        .replayed
        .iter()
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!(would, ["dry-1", "dry-2", "dry-3"]);
    let after = entries(&w).await;
    let summary = |entries: &[dlq::DeadLetterEntry]| -> Vec<(String, Option<String>)> {
        entries
            .iter()
            .map(|e| (e.message_id.clone(), e.dead_lettered_at.clone()))
            .collect()
    };
    assert_eq!(summary(&after), summary(&before));
    w.stop().await;
}

#[tokio::test]
async fn replaying_by_type_takes_only_that_type_and_keeps_the_others_in_order() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    dead_letter(&w, "order.placed", b"{not json", Some("type-a")).await;
    let save_id = dead_letter_save(&w, "ord_t").await;
    dead_letter(
        &w,
        "wallet.attach",
        b"{\"also\": \"broken\"}",
        Some("type-c"),
    )
    .await;
    dead_letter(&w, "order.placed", b"[]", Some("type-d")).await;
    place_order(&w, "ord_t", "cus_t").await;

    let selection = Selection::of_type("wallet.save");
    let report = replay(&w, &selection, ReplayOptions::default()).await;
    let replayed: Vec<_> = report
        .replayed
        .iter()
        .map(|r| r.message_id.as_str())
        .collect();
    assert_eq!((report.total, replayed), (4, vec![save_id.as_str()]));
    assert_eq!(
        w.event_caused_by(&save_id).await.routing_key,
        "wallet.saved"
    );
    assert_eq!(listed_ids(&w).await, ["type-a", "type-c", "type-d"]);
    w.stop().await;
}

#[tokio::test]
async fn a_replay_interrupted_after_a_confirm_loses_nothing_and_each_message_has_one_effect() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(dead_letter_save(&w, &format!("ord_c{i}")).await);
    }
    for i in 1..=3 {
        place_order(&w, &format!("ord_c{i}"), &format!("cus_c{i}")).await;
    }

    let crash = ReplayOptions {
        crash_after_confirms: Some(2),
        ..Default::default()
    };
    let report = replay(&w, &Selection::all(), crash).await;
    assert!(report.interrupted);
    assert_eq!(report.replayed.len(), 2);
    // The first two were republished; the crash came before the second was acked.
    saved_events_for(&mut w, &ids[..2]).await;
    assert_eq!(listed_ids(&w).await, [ids[1].clone(), ids[2].clone()]);

    let report = replay(&w, &Selection::all(), ReplayOptions::default()).await;
    assert_eq!(report.replayed.len(), 2);
    saved_events_for(&mut w, &ids[2..]).await;
    w.assert_no_event_within(std::time::Duration::from_millis(500))
        .await;
    assert_eq!(w.dead_letter_count().await, 0);
    let in_ids = format!("'{}'", ids.join("','"));
    assert_eq!(
        w.count(&format!(
            "SELECT count(*) FROM processed_messages WHERE message_id IN ({in_ids})"
        ))
        .await,
        3
    );
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        3
    );
    assert_eq!(
        w.gateway_requests().await.len(),
        3,
        "one gateway call per message"
    );
    w.stop().await;
}
