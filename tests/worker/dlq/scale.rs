//! Passes over a queue: `list --limit` holds only what it shows and leaves the queue as
//! it was, filters, summary counts, replay and purge by error kind, and a replay killed
//! halfway that loses nothing.

use super::{ReplayRun, listed_ids, replay};
use crate::helpers::*;
use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use lapin::types::{AMQPValue, FieldTable};
use std::collections::BTreeMap;
use tokio::io::AsyncBufReadExt;
use wallet_worker::broker::dlq::{self, ReplayOptions, Selection};
use wallet_worker::broker::headers;

/// One dead letter as the worker writes them, put straight into the dead-letter queue.
struct Dead<'a> {
    id: &'a str,
    kind: &'a str,
    error: &'a str,
    at: &'a str,
}

async fn put(w: &TestWorker, dead: &[Dead<'_>]) {
    let dlq = w.topology().dead_letter_queue();
    for d in dead {
        let mut table = FieldTable::default();
        for (name, value) in [
            (headers::ERROR, headers::long_string(d.error)),
            (headers::ERROR_DETAIL, headers::long_string("test")),
            (headers::ATTEMPTS, AMQPValue::LongLongInt(4)),
            (headers::ORIGINAL_ROUTING_KEY, headers::long_string(d.kind)),
            (headers::DEAD_LETTERED_AT, headers::long_string(d.at)),
        ] {
            table.insert(name.into(), value);
        }
        let body = serde_json::to_vec(&envelope(d.kind, serde_json::json!({}))).unwrap();
        let props = BasicProperties::default()
            .with_message_id(d.id.into())
            .with_delivery_mode(2)
            .with_headers(table);
        w.channel
            .basic_publish(
                "".into(),
                dlq.as_str().into(),
                Default::default(),
                &body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// `n` dead letters `d-00`, `d-01`, ...: errors and types in turn, a second apart.
async fn fill(w: &TestWorker, n: usize) -> Vec<String> {
    let errors = ["order_not_found", "malformed", "gateway_unavailable"];
    let kinds = ["wallet.save", "order.placed"];
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("d-{i:02}");
        let base: chrono::DateTime<chrono::Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
        let at = (base + chrono::Duration::seconds(i as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        put(
            w,
            &[Dead {
                id: &id,
                kind: kinds[i % 2],
                error: errors[i % 3],
                at: &at,
            }],
        )
        .await;
        ids.push(id);
    }
    ids
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (ready, unacked) of a queue, as the broker counts them.
fn broker_counts(queue: &str) -> (u64, u64) {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(queue))
        .unwrap_or_else(|| panic!("{queue} in {text}"));
    let cells: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    (cells[0], cells[1])
}

/// Waits until the broker noticed a killed `dlq` command: its held dead letters are
/// back and its lock is gone.
async fn wait_until_released(w: &TestWorker) {
    let dlq_name = w.topology().dead_letter_queue();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, unacked) = broker_counts(&dlq_name);
        let channel = w.connection.create_channel().await.unwrap();
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let lock = format!("{dlq_name}.lock");
        let locked = channel
            .queue_declare(lock.as_str().into(), passive, FieldTable::default())
            .await
            .is_ok();
        let _ = channel.close(200, "checked".into()).await;
        if unacked == 0 && !locked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the killed command's hold stays"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_with_a_limit_holds_only_what_it_shows_and_leaves_the_queue_in_order() {
    let w = spawn_worker().await;
    let ids = fill(&w, 30).await;
    let dlq_name = w.topology().dead_letter_queue();
    let mut shown = Vec::new();
    let mut held_while_showing = Vec::new();
    let report = dlq::list(
        &w.connection,
        &w.topology(),
        &Selection::all(),
        Some(5),
        |e| {
            // The pass is paused here: ask the broker what it holds for us.
            held_while_showing.push(broker_counts(&dlq_name));
            shown.push(e.message_id);
        },
    )
    .await
    .unwrap();
    assert_eq!(shown, ids[..5]);
    assert_eq!(
        (report.depth, report.shown, report.more),
        (30, 5, 25),
        "the rest is counted from the depth"
    );
    for (ready, unacked) in &held_while_showing {
        assert!(
            *unacked <= 5 && ready + unacked == 30,
            "{held_while_showing:?}"
        );
    }
    assert_eq!(broker_counts(&dlq_name), (30, 0), "everything handed back");
    assert_eq!(listed_ids(&w).await, ids, "same order, same count");
    w.stop().await;
}

#[tokio::test]
async fn filters_take_error_type_and_time_together_and_count_the_matches_not_shown() {
    let w = spawn_worker().await;
    let ids = fill(&w, 12).await;
    let list = async |filter: Selection, limit: Option<u64>| {
        let mut shown = Vec::new();
        let report = dlq::list(&w.connection, &w.topology(), &filter, limit, |e| {
            shown.push(e.message_id)
        })
        .await
        .unwrap();
        (shown, report.more)
    };
    // Errors cycle with period 3, types with period 2: order_not_found is 0, 3, 6, 9.
    let (shown, more) = list(Selection::of_error("order_not_found"), Some(3)).await;
    assert_eq!((shown, more), (strings(&["d-00", "d-03", "d-06"]), 1));
    let (shown, _) = list(Selection::of_type("order.placed"), None).await;
    assert_eq!(shown, ["d-01", "d-03", "d-05", "d-07", "d-09", "d-11"]);
    let since = "2026-11-01T00:00:07Z".parse().ok();
    let (shown, more) = list(Selection::of_type("order.placed").since(since), Some(10)).await;
    assert_eq!((shown, more), (strings(&["d-07", "d-09", "d-11"]), 0));
    let both = Selection {
        error: Some("order_not_found".into()),
        kind: Some("wallet.save".into()),
        ..Selection::default()
    };
    assert_eq!(list(both, None).await.0, ["d-00", "d-06"]);
    assert_eq!(
        listed_ids(&w).await,
        ids,
        "filtered passes left the queue as it was"
    );
    w.stop().await;
}

#[tokio::test]
async fn the_summary_counts_by_error_and_type_and_names_the_oldest_and_newest() {
    let w = spawn_worker().await;
    put(
        &w,
        &[
            Dead {
                id: "s-1",
                kind: "wallet.save",
                error: "order_not_found",
                at: "2026-11-02T10:00:00.000Z",
            },
            Dead {
                id: "s-2",
                kind: "order.placed",
                error: "malformed",
                at: "2026-11-01T09:00:00.000Z",
            },
            Dead {
                id: "s-3",
                kind: "wallet.save",
                error: "order_not_found",
                at: "2026-11-03T08:00:00.000Z",
            },
        ],
    )
    .await;
    let summary = dlq::summary(&w.connection, &w.topology()).await.unwrap();
    let counts = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    assert_eq!(summary.total, 3);
    assert_eq!(
        summary.by_error,
        counts(&[("malformed", 1), ("order_not_found", 2)])
    );
    assert_eq!(
        summary.by_type,
        counts(&[("order.placed", 1), ("wallet.save", 2)])
    );
    assert_eq!(summary.oldest.as_deref(), Some("2026-11-01T09:00:00.000Z"));
    assert_eq!(summary.newest.as_deref(), Some("2026-11-03T08:00:00.000Z"));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["by_error"]["order_not_found"], 2);
    assert_eq!(json["total"], 3);
    assert_eq!(listed_ids(&w).await, ["s-1", "s-2", "s-3"]);
    w.stop().await;
}

#[tokio::test]
async fn replay_and_purge_by_error_kind_take_only_that_kind_and_keep_the_rest_in_order() {
    let w = spawn_worker().await;
    let ids = fill(&w, 9).await;
    let report = dlq::purge(
        &w.connection,
        &w.topology(),
        &Selection::of_error("malformed"),
    )
    .await
    .unwrap();
    assert_eq!(report.purged, 3);
    assert_eq!(
        listed_ids(&w).await,
        ["d-00", "d-02", "d-03", "d-05", "d-06", "d-08"]
    );
    let ReplayRun { replayed, .. } = replay(
        &w,
        &Selection::of_error("gateway_unavailable"),
        ReplayOptions::default(),
    )
    .await;
    let replayed: Vec<_> = replayed.into_iter().map(|r| r.message_id).collect();
    assert_eq!(replayed, ["d-02", "d-05", "d-08"]);
    // The replayed envelopes carry no data: the worker dead-letters them again, at the tail.
    w.wait_for_dead_letters(6).await;
    let left = listed_ids(&w).await;
    let expected: Vec<&str> = ["d-00", "d-03", "d-06"].into();
    assert_eq!(&left[..3], expected.as_slice(), "{left:?} of {ids:?}");
    let mut back = left[3..].to_vec();
    back.sort();
    assert_eq!(back, replayed);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_killed_halfway_loses_nothing_and_leaves_the_rest_in_order() {
    let mut w = spawn_worker().await;
    let ids = fill(&w, 20).await;
    // No consumer on the worker's queue: replayed messages stay there to be counted.
    w.pause_in_process_worker().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
        .args(["dlq", "replay", "--all", "--rate", "10"])
        .env("AMQP_URL", AMQP_URL)
        .env("WALLET_EXCHANGE", &w.args.amqp.exchange)
        .env("WALLET_QUEUE", &w.args.amqp.queue)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = 0;
    while printed < 3 {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("replay makes progress")
            .unwrap()
            .expect("replay still running");
        assert!(line.starts_with("replayed "), "{line}");
        printed += 1;
    }
    let busy = dlq::list(&w.connection, &w.topology(), &Selection::all(), None, drop).await;
    assert!(
        matches!(busy, Err(dlq::DlqError::Busy(_))),
        "one dlq command at a time: {busy:?}"
    );
    child.kill().await.unwrap();
    wait_until_released(&w).await;

    let mut requeued = Vec::new();
    let queue = w.args.amqp.queue.clone();
    while let Some(got) = w
        .channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        requeued.push(
            got.delivery
                .properties
                .message_id()
                .clone()
                .unwrap()
                .to_string(),
        );
    }
    let left = listed_ids(&w).await;
    assert!(requeued.len() >= 3 && requeued.len() < 20, "{requeued:?}");
    assert_eq!(requeued, ids[..requeued.len()], "replayed in queue order");
    // At most the batch in flight at the kill is in both places (the inbox dedupes it).
    let first_left = ids.iter().position(|id| *id == left[0]).unwrap();
    assert!(
        first_left <= requeued.len(),
        "nothing lost: {requeued:?} {left:?}"
    );
    assert_eq!(left, ids[first_left..], "the rest in order, none lost");
    assert!(
        requeued.len() - first_left <= 10,
        "doubles only from the last batch"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_purge_across_several_held_segments_removes_only_its_kind_and_keeps_the_order() {
    let w = spawn_worker().await;
    // More than two segments of 1000: the pass holds them on three channels.
    let ids = fill(&w, 2500).await;
    let report = dlq::purge(
        &w.connection,
        &w.topology(),
        &Selection::of_error("malformed"),
    )
    .await
    .unwrap();
    let kept: Vec<&String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 1)
        .map(|(_, id)| id)
        .collect();
    assert_eq!(report.purged as usize, ids.len() - kept.len());
    let left = listed_ids(&w).await;
    assert_eq!(left.iter().collect::<Vec<_>>(), kept, "the rest in order");
    w.stop().await;
}
