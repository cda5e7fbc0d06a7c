//! Dead-letter operations (docs/interface.md, command line `dlq`) on dead letters the real worker made:
//! listing keeps the queue as it was, replay acks only after the broker confirmed,
//! purge takes only what it was asked to.

mod broker_dead_letters;
mod replay;
mod scale;

use crate::helpers::*;
use lapin::BasicProperties;
use lapin::options::BasicGetOptions;
use serde_json::{Value, json};
use wallet_worker::broker::dlq::{
    self, DeadLetterEntry, NotReplayed, ReplayOptions, ReplayStep, Replayed, Selection,
};

fn props(message_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    match message_id {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// Publishes one message and waits until the worker dead-lettered it, so the queue
/// order is the publish order.
async fn dead_letter(w: &TestWorker, routing_key: &str, body: &[u8], message_id: Option<&str>) {
    let before = w.dead_letter_count().await;
    w.publish_raw(routing_key, body, props(message_id)).await;
    w.wait_for_dead_letters(before + 1).await;
}

/// A `wallet.save` of an order never placed: retried, then dead-lettered `order_not_found`.
async fn dead_letter_save(w: &TestWorker, order_id: &str) -> String {
    let msg = wallet_save(order_id);
    let id = msg["id"].as_str().unwrap().to_owned();
    dead_letter(w, "wallet.save", &bytes(&msg), Some(&id)).await;
    id
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

/// Every dead letter, in queue order (test queues are small).
async fn entries(w: &TestWorker) -> Vec<DeadLetterEntry> {
    let mut entries = Vec::new();
    dlq::list(&w.connection, &w.topology(), &Selection::all(), None, |e| {
        entries.push(e)
    })
    .await
    .expect("list");
    entries
}

/// A replay's report with its steps collected, as a test reads them.
#[derive(Debug)]
struct ReplayRun {
    total: u64,
    replayed: Vec<Replayed>,
    failed: Vec<NotReplayed>,
    unknown_ids: Vec<String>,
    dry_run: bool,
    interrupted: bool,
}

async fn replay(w: &TestWorker, selection: &Selection, options: ReplayOptions) -> ReplayRun {
    let (mut replayed, mut failed) = (Vec::new(), Vec::new());
    let report = dlq::replay(
        &w.connection,
        &w.topology(),
        selection,
        options,
        |step| match step {
            ReplayStep::Replayed(r) => replayed.push(r),
            ReplayStep::Failed(f) => failed.push(f),
        },
    )
    .await
    .expect("replay");
    assert_eq!(
        (report.replayed, report.failed),
        (replayed.len() as u64, failed.len() as u64)
    );
    ReplayRun {
        total: report.total,
        replayed,
        failed,
        unknown_ids: report.unknown_ids,
        dry_run: report.dry_run,
        interrupted: report.interrupted,
    }
}

async fn listed_ids(w: &TestWorker) -> Vec<String> {
    entries(w).await.into_iter().map(|e| e.message_id).collect()
}

#[tokio::test]
async fn listing_shows_every_dead_letter_in_queue_order_and_leaves_the_queue_as_it_was() {
    let w = spawn_worker().await;
    let save = wallet_save("");
    let mut wrong_type = order_placed("ord_l", "cus_l", "tok_l", false);
    wrong_type["type"] = json!("order.cancelled");
    let attach = envelope("wallet.attach", json!({ "order": { "id": "o" } }));
    let published: Vec<(&str, Vec<u8>, Option<String>)> = vec![
        ("order.placed", b"{not json".to_vec(), Some("dl-a".into())),
        ("wallet.save", bytes(&save), None),
        ("order.placed", b"\xff\xfe\x00binary".to_vec(), None),
        (
            "order.placed",
            bytes(&wrong_type),
            wrong_type["id"].as_str().map(str::to_owned),
        ),
        (
            "wallet.attach",
            bytes(&attach),
            attach["id"].as_str().map(str::to_owned),
        ),
    ];
    for (key, body, id) in &published {
        dead_letter(&w, key, body, id.as_deref()).await;
    }

    let entries = entries(&w).await;
    let ids: Vec<&str> = entries.iter().map(|e| e.message_id.as_str()).collect();
    let save_id = save["id"].as_str().unwrap();
    assert_eq!(
        ids,
        [
            "dl-a",
            save_id,
            "-",
            wrong_type["id"].as_str().unwrap(),
            attach["id"].as_str().unwrap()
        ]
    );
    for (entry, (key, body, _)) in entries.iter().zip(&published) {
        assert_eq!(entry.routing_key.as_deref(), Some(*key));
        assert_eq!(entry.error.as_deref(), Some("malformed"));
        assert!(entry.error_detail.is_some());
        assert_eq!(entry.attempts, Some(1));
        assert!(
            chrono::DateTime::parse_from_rfc3339(entry.dead_lettered_at.as_deref().unwrap())
                .is_ok()
        );
        assert_eq!(entry.body_size(), body.len());
        assert_eq!(entry.raw_body(), &body[..]);
    }
    assert_eq!(
        entries.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );

    assert_eq!(
        listed_ids(&w).await,
        ids,
        "a second listing sees the same queue"
    );
    let dlq_name = w.topology().dead_letter_queue();
    let mut drained = Vec::new();
    while let Some(got) = w
        .channel
        .basic_get(dlq_name.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        drained.push(got.delivery.data.clone());
    }
    let expected: Vec<Vec<u8>> = published.into_iter().map(|(_, body, _)| body).collect();
    assert_eq!(
        drained, expected,
        "after listing, the queue holds the same messages in the same order"
    );
    w.stop().await;
}

#[tokio::test]
async fn the_json_shape_has_every_field_and_never_shows_a_payment_token() {
    let w = spawn_worker().await;
    let mut with_token = order_placed("ord_j", "cus_j", "tok_dlq_json_secret", false);
    with_token["type"] = json!("order.cancelled");
    let id = with_token["id"].as_str().unwrap().to_owned();
    dead_letter(&w, "order.placed", &bytes(&with_token), Some(&id)).await;
    dead_letter(&w, "order.placed", b"\xff\xfe", Some("binary-1")).await;

    let entries = entries(&w).await;
    let doc = entries[0].to_json();
    assert_eq!(doc["message_id"], id.as_str());
    assert_eq!(doc["routing_key"], "order.placed");
    assert_eq!(doc["error"], "malformed");
    assert!(doc["error_detail"].as_str().unwrap().contains("type"));
    assert_eq!(doc["attempts"], 1);
    assert!(doc["dead_lettered_at"].is_string());
    assert_eq!(doc["body_size"], bytes(&with_token).len());
    assert_eq!(doc["headers"]["x-wallet-error"], "malformed");
    assert_eq!(doc["headers"]["x-wallet-attempts"], "1");
    assert_eq!(
        doc["headers"]["x-wallet-original-routing-key"],
        "order.placed"
    );
    assert_eq!(doc["properties"]["message_id"], id.as_str());
    let body: Value = serde_json::from_str(doc["body"].as_str().unwrap()).expect("body as text");
    assert_eq!(
        body["data"]["order"]["payment_source"]["payment_source_token"],
        "[redacted]"
    );
    assert!(doc.get("body_base64").is_none());

    let binary = entries[1].to_json();
    assert_eq!(binary["body_base64"], "//4=");
    assert!(binary.get("body").is_none());

    let shown = wallet_worker::cli::dlq::details(&entries[0], entries.len());
    let table = wallet_worker::cli::dlq::table(&entries, &w.topology().dead_letter_queue());
    for output in [doc.to_string(), shown.clone(), table.clone()] {
        assert!(
            !output.contains("tok_dlq_json_secret"),
            "no token in output: {output}"
        );
    }
    assert!(
        shown.contains("x-wallet-error-detail") && shown.contains("\"ord_j\""),
        "{shown}"
    );
    assert!(
        table.contains("MESSAGE ID")
            && table.contains("binary-1")
            && table.contains("2 dead letters"),
        "{table}"
    );
    assert!(
        entries[0]
            .raw_body()
            .windows(19)
            .any(|w| w == b"tok_dlq_json_secret"),
        "replay keeps the bytes"
    );
    assert!(
        !captured_logs().contains("tok_dlq_json_secret"),
        "no token in the logs"
    );
    w.stop().await;
}

#[tokio::test]
async fn purging_by_id_removes_only_those_and_purging_all_empties_the_queue() {
    let w = spawn_worker().await;
    for id in ["p-1", "p-2", "p-3"] {
        dead_letter(&w, "order.placed", b"{not json", Some(id)).await;
    }
    let selection = Selection::ids(["p-2", "nope"]);
    let report = dlq::purge(&w.connection, &w.topology(), &selection)
        .await
        .unwrap();
    assert_eq!(
        (report.purged, report.unknown_ids),
        (1, vec!["nope".to_owned()])
    );
    assert_eq!(listed_ids(&w).await, ["p-1", "p-3"]);

    let report = dlq::purge(&w.connection, &w.topology(), &Selection::all())
        .await
        .unwrap();
    assert_eq!(report.purged, 2);
    assert_eq!(w.dead_letter_count().await, 0);
    w.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_reported_and_a_missing_queue_is_named_in_one_line() {
    let w = spawn_worker().await;
    let selection = Selection::ids(["nope"]);
    let report = replay(&w, &selection, ReplayOptions::default()).await;
    assert_eq!(
        (report.replayed.len(), report.unknown_ids),
        (0, vec!["nope".to_owned()])
    );

    let never = wallet_worker::broker::Topology::new(
        &w.args.amqp.exchange,
        &unique("never-declared"),
        1000,
        600_000,
    );
    let expected = format!(
        "no dead-letter queue {}: has the worker run?",
        never.dead_letter_queue()
    );
    let err = dlq::list(&w.connection, &never, &Selection::all(), None, drop)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = dlq::purge(&w.connection, &never, &Selection::all())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), expected);
    assert!(entries(&w).await.is_empty(), "the connection still works");
    w.stop().await;
}

#[tokio::test]
async fn the_dlq_command_prints_for_people_and_scripts_and_fails_in_one_line() {
    let w = spawn_worker().await;
    dead_letter(&w, "order.placed", b"{not json", Some("cli-1")).await;
    let run = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
            .arg("dlq")
            .args(args)
            .env("AMQP_URL", AMQP_URL)
            .env("WALLET_EXCHANGE", &w.args.amqp.exchange)
            .env("WALLET_QUEUE", &w.args.amqp.queue)
            .env_remove("RUST_LOG")
            .output()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let dlq_name = w.topology().dead_letter_queue();

    let list = run(&["list"]).await.unwrap();
    let out = text(&list.stdout);
    assert!(
        list.status.success() && list.stderr.is_empty(),
        "{}",
        text(&list.stderr)
    );
    assert!(
        out.starts_with("#  MESSAGE ID") && out.contains("cli-1") && out.contains("malformed"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("1 dead letter in {dlq_name}\n")),
        "{out}"
    );
    let json: Vec<Value> =
        serde_json::from_slice(&run(&["list", "--json"]).await.unwrap().stdout).unwrap();
    assert_eq!(json[0]["body"], "{not json");
    let show = text(&run(&["show", "cli-1"]).await.unwrap().stdout);
    assert!(
        show.contains("x-wallet-original-routing-key") && show.contains("body\n{not json"),
        "{show}"
    );

    let unknown = run(&["replay", "--id", "nope"]).await.unwrap();
    assert!(!unknown.status.success());
    assert_eq!(
        text(&unknown.stderr),
        format!("wallet-worker: no dead letter with message id nope in {dlq_name}\n")
    );
    dead_letter(&w, "wallet.save", b"{not json either", Some("cli-2")).await;
    let limited = text(&run(&["list", "--limit", "1"]).await.unwrap().stdout);
    assert!(
        limited.ends_with(&format!(
            "1 shown; 1 more in {dlq_name} (2 dead letters in all; use --limit N or --all)\n"
        )) && !limited.contains("cli-2"),
        "{limited}"
    );
    let filtered = text(
        &run(&["list", "--type", "wallet.save", "--error", "malformed"])
            .await
            .unwrap()
            .stdout,
    );
    assert!(
        filtered.contains("cli-2")
            && !filtered.contains("cli-1")
            && filtered.ends_with(&format!("1 matching of 2 dead letters in {dlq_name}\n")),
        "{filtered}"
    );
    let summary: Value =
        serde_json::from_slice(&run(&["summary", "--json"]).await.unwrap().stdout).unwrap();
    assert_eq!(summary["total"], 2);
    assert_eq!(summary["by_error"]["malformed"], 2);
    assert_eq!(summary["by_type"]["wallet.save"], 1);
    assert!(summary["oldest"].as_str().unwrap() <= summary["newest"].as_str().unwrap());
    let purge = run(&["purge", "--type", "wallet.save"]).await.unwrap();
    assert_eq!(
        text(&purge.stdout),
        format!("purged 1 dead letter from {dlq_name}\n")
    );
    let dry = text(
        &run(&["replay", "--id", "cli-1", "--dry-run"])
            .await
            .unwrap()
            .stdout,
    );
    assert!(
        dry.ends_with("would replay 1 of 1 dead letter (dry run: nothing changed)\n"),
        "{dry}"
    );
    let purge = run(&["purge", "--all"]).await.unwrap();
    assert_eq!(
        text(&purge.stdout),
        format!("purged 1 dead letter from {dlq_name}\n")
    );
    w.stop().await;
}
