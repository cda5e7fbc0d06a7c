//! The dead-letter store (docs/operations.md, the dead-letter store) as ops use it: the
//! `dlq` command lists, shows and summarises the stored dead letters — page by page,
//! filtered, grouped, tokens masked — and replays and purges them.

mod intake;
#[cfg(feature = "failpoints")]
mod kill;
mod leaks;
mod purge;
mod replay;
mod upgrade;

use crate::helpers::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};
use wallet_worker::broker::headers;

/// One dead letter as the worker writes them, put straight into the intake queue.
pub struct Dead<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub error: &'a str,
    pub detail: &'a str,
    pub at: &'a str,
    pub data: Value,
}

/// The headers the worker gives a dead letter.
pub fn dead_letter_headers(d: &Dead<'_>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in [
        (headers::ERROR, headers::long_string(d.error)),
        (headers::ERROR_DETAIL, headers::long_string(d.detail)),
        (headers::ATTEMPTS, AMQPValue::LongLongInt(4)),
        (headers::ORIGINAL_ROUTING_KEY, headers::long_string(d.kind)),
        (headers::DEAD_LETTERED_AT, headers::long_string(d.at)),
    ] {
        table.insert(name.into(), value);
    }
    table
}

/// The envelope body of `d`.
pub fn body_of(d: &Dead<'_>) -> Vec<u8> {
    let mut envelope = envelope(d.kind, d.data.clone());
    envelope["id"] = json!(d.id);
    serde_json::to_vec(&envelope).unwrap()
}

/// Publishes `body` with `properties` to the intake queue, confirmed.
pub async fn put_raw(w: &TestWorker, body: &[u8], properties: BasicProperties) {
    let dlq = w.topology().dead_letter_queue();
    w.channel
        .basic_publish(
            "".into(),
            dlq.as_str().into(),
            Default::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Puts `dead` into the intake queue, as the worker would have, and waits until the
/// store holds them.
pub async fn put(w: &TestWorker, dead: &[Dead<'_>]) {
    let before = w.dead_letter_count().await;
    for d in dead {
        let props = BasicProperties::default()
            .with_message_id(d.id.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(dead_letter_headers(d));
        put_raw(w, &body_of(d), props).await;
    }
    w.wait_for_dead_letters(before + dead.len() as u32).await;
}

/// `n` dead letters `d-00`, `d-01`, ...: three error kinds and two types in turn (six
/// failure groups), a second apart from 2026-11-01T00:00:00Z, for orders `ord-0..3`
/// and customers `cus-0..4`.
pub async fn fill(w: &TestWorker, n: usize) -> Vec<String> {
    let errors = ["order_not_found", "malformed", "gateway_unavailable"];
    let kinds = ["wallet.save", "order.placed"];
    let base: chrono::DateTime<chrono::Utc> = "2026-11-01T00:00:00Z".parse().unwrap();
    let (ids, ats): (Vec<String>, Vec<String>) = (0..n)
        .map(|i| {
            let at = base + chrono::Duration::seconds(i as i64);
            (
                format!("d-{i:02}"),
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        })
        .unzip();
    let details: Vec<String> = (0..n).map(|i| format!("failed at step {i}")).collect();
    let dead: Vec<Dead<'_>> = (0..n)
        .map(|i| Dead {
            id: &ids[i],
            kind: kinds[i % 2],
            error: errors[i % 3],
            detail: &details[i],
            at: &ats[i],
            data: json!({ "order_id": format!("ord-{}", i % 4), "customer_id": format!("cus-{}", i % 5) }),
        })
        .collect();
    put(w, &dead).await;
    ids
}

/// Runs `wallet-worker dlq ARGS` against the worker's database and broker.
pub async fn dlq_cli(w: &TestWorker, args: &[&str]) -> CliOutput {
    let env = [
        ("AMQP_URL", AMQP_URL),
        ("WALLET_EXCHANGE", w.args.amqp.exchange.as_str()),
        ("WALLET_QUEUE", w.args.amqp.queue.as_str()),
    ];
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    run_cli_with(&w.args.db.database_url, &env, &all).await
}

/// The message ids of a `dlq list --json` output.
pub fn listed(out: &CliOutput) -> Vec<String> {
    assert!(out.success, "{}", out.stderr);
    let entries: Vec<Value> = serde_json::from_str(&out.stdout).expect("a JSON array");
    entries
        .iter()
        .map(|e| e["message_id"].as_str().unwrap_or("-").to_owned())
        .collect()
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// What a command said to people on stderr (its log lines are JSON).
pub fn human(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The line a command printed last.
fn last_line(out: &CliOutput) -> &str {
    out.stdout.lines().last().unwrap_or_default()
}

#[tokio::test]
async fn listing_pages_through_the_store_oldest_first_with_a_cursor_and_counts_the_rest() {
    let w = spawn_worker().await;
    let ids = fill(&w, 30).await;

    let first = dlq_cli(&w, &["list", "--limit", "10"]).await;
    assert!(first.success, "{}", first.stderr);
    assert!(
        first.stdout.starts_with("ID  MESSAGE ID"),
        "{}",
        first.stdout
    );
    for id in &ids[..10] {
        assert!(first.stdout.contains(id.as_str()), "{}", first.stdout);
    }
    assert!(!first.stdout.contains(ids[10].as_str()));
    let line = last_line(&first);
    assert!(
        line.starts_with("10 shown; 20 more; next page: --after "),
        "{line}"
    );
    let cursor = line.rsplit(' ').next().unwrap();

    let second = dlq_cli(&w, &["list", "--limit", "10", "--after", cursor, "--json"]).await;
    assert_eq!(listed(&second), ids[10..20]);
    assert!(
        second
            .stderr
            .contains("10 shown; 10 more; next page: --after "),
        "{}",
        second.stderr
    );
    let everything = dlq_cli(&w, &["list", "--all"]).await;
    assert_eq!(last_line(&everything), "30 dead letters");
    assert_eq!(
        everything.stdout.lines().count(),
        32,
        "header, rows, last line"
    );
    let bad = dlq_cli(&w, &["list", "--after", "yesterday"]).await;
    assert!(!bad.success);
    assert_eq!(
        human(&bad.stderr),
        "wallet-worker: yesterday is not a cursor of dlq list"
    );
    w.stop().await;
}

#[tokio::test]
async fn filters_take_error_type_group_time_order_and_customer_together() {
    let w = spawn_worker().await;
    fill(&w, 12).await;
    let list = async |args: &[&str]| {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        listed(&dlq_cli(&w, &all).await)
    };
    // Errors cycle with period 3, types with period 2: order_not_found is 0, 3, 6, 9.
    let limited = dlq_cli(&w, &["list", "--error", "order_not_found", "--limit", "3"]).await;
    assert!(
        last_line(&limited).starts_with("3 shown; 1 more match; next page: --after "),
        "{}",
        limited.stdout
    );
    assert_eq!(
        list(&["--type", "order.placed"]).await,
        strings(&["d-01", "d-03", "d-05", "d-07", "d-09", "d-11"])
    );
    let since = ["--type", "order.placed", "--since", "2026-11-01T00:00:07Z"];
    assert_eq!(list(&since).await, strings(&["d-07", "d-09", "d-11"]));
    let until = ["--error", "malformed", "--until", "2026-11-01T00:00:07Z"];
    assert_eq!(list(&until).await, strings(&["d-01", "d-04"]));
    let both = ["--error", "order_not_found", "--type", "wallet.save"];
    assert_eq!(list(&both).await, strings(&["d-00", "d-06"]));
    assert_eq!(
        list(&["--order", "ord-1"]).await,
        strings(&["d-01", "d-05", "d-09"])
    );
    assert_eq!(
        list(&["--customer", "cus-2", "--type", "wallet.save"]).await,
        strings(&["d-02"])
    );
    let summary: Value =
        serde_json::from_str(&dlq_cli(&w, &["summary", "--json"]).await.stdout).unwrap();
    let group = summary["by_group"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["error"] == "malformed" && g["type"] == "order.placed")
        .expect("the group of malformed order.placed");
    let key = group["group"].as_str().unwrap();
    assert_eq!(list(&["--group", key]).await, strings(&["d-01", "d-07"]));
    let none = dlq_cli(&w, &["list", "--order", "ord-nobody"]).await;
    assert_eq!(last_line(&none), "no matching dead letters");
    w.stop().await;
}

#[tokio::test]
async fn the_summary_counts_by_error_type_and_failure_group_and_names_the_oldest_and_newest() {
    let w = spawn_worker().await;
    fill(&w, 12).await;
    let out = dlq_cli(&w, &["summary", "--json"]).await;
    assert!(out.success, "{}", out.stderr);
    let summary: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(summary["total"], 12);
    assert_eq!(
        summary["by_error"],
        json!({"gateway_unavailable": 4, "malformed": 4, "order_not_found": 4})
    );
    assert_eq!(
        summary["by_type"],
        json!({"order.placed": 6, "wallet.save": 6})
    );
    assert_eq!(summary["oldest"], "2026-11-01T00:00:00.000Z");
    assert_eq!(summary["newest"], "2026-11-01T00:00:11.000Z");
    let groups = summary["by_group"].as_array().unwrap();
    assert_eq!(groups.len(), 6, "error kind × type, the step numbers aside");
    for group in groups {
        assert_eq!(group["count"], 2, "{group}");
        assert_eq!(group["label"], "failed at step *");
    }
    let first = groups
        .iter()
        .find(|g| g["error"] == "order_not_found" && g["type"] == "wallet.save")
        .unwrap();
    assert_eq!(
        (&first["first_seen"], &first["last_seen"]),
        (
            &json!("2026-11-01T00:00:00.000Z"),
            &json!("2026-11-01T00:00:06.000Z")
        )
    );
    let text = dlq_cli(&w, &["summary"]).await.stdout;
    assert!(text.starts_with("12 dead letters in the store\n"), "{text}");
    assert!(text.contains("by failure group"), "{text}");
    w.stop().await;
}

#[tokio::test]
async fn show_and_the_json_listing_mask_tokens_in_bodies_and_headers_and_the_store_keeps_them() {
    let w = spawn_worker().await;
    let mut with_token = order_placed("ord_j", "cus_j", "tok_dlq_json_secret", false);
    with_token["type"] = json!("order.cancelled");
    let id = with_token["id"].as_str().unwrap().to_owned();
    let mut table = FieldTable::default();
    table.insert(
        "x-api-token".into(),
        headers::long_string("tok_header_secret"),
    );
    let props = BasicProperties::default()
        .with_message_id(id.as_str().into())
        .with_content_type("application/json".into())
        .with_headers(table);
    w.publish_raw(
        "order.placed",
        &serde_json::to_vec(&with_token).unwrap(),
        props,
    )
    .await;
    let stored = w.next_dead_letter().await;
    assert!(
        stored.data.windows(19).any(|w| w == b"tok_dlq_json_secret"),
        "the store keeps the bytes a replay needs"
    );
    let binary = BasicProperties::default().with_message_id("binary-1".into());
    w.publish_raw("order.placed", b"\xff\xfe", binary).await;
    w.next_dead_letter().await;

    let json = dlq_cli(&w, &["list", "--json"]).await;
    let entries: Vec<Value> = serde_json::from_str(&json.stdout).unwrap();
    let doc = &entries[0];
    assert_eq!(doc["message_id"], id.as_str());
    assert_eq!(doc["routing_key"], "order.placed");
    assert_eq!(doc["error"], "malformed");
    assert!(doc["error_detail"].as_str().unwrap().contains("type"));
    assert_eq!(doc["attempts"], 1);
    assert!(doc["dead_lettered_at"].is_string());
    assert_eq!(doc["order_id"], "ord_j");
    assert_eq!(doc["customer_id"], "cus_j");
    assert_eq!(
        doc["body_size"],
        serde_json::to_vec(&with_token).unwrap().len()
    );
    assert_eq!(doc["headers"]["x-wallet-error"], "malformed");
    assert_eq!(doc["headers"]["x-wallet-attempts"], "1");
    assert_eq!(doc["headers"]["x-api-token"], "[redacted]");
    assert_eq!(doc["properties"]["message_id"], id.as_str());
    let body: Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["data"]["order"]["payment_source"]["payment_source_token"],
        "[redacted]"
    );
    assert_eq!(entries[1]["body_base64"], "//4=");
    assert!(entries[1].get("body").is_none());

    let show = dlq_cli(&w, &["show", &id]).await;
    assert!(show.success, "{}", show.stderr);
    assert!(
        show.stdout.contains("x-wallet-error-detail") && show.stdout.contains("\"ord_j\""),
        "{}",
        show.stdout
    );
    let by_row = dlq_cli(&w, &["show", &stored.row.id.to_string()]).await;
    assert_eq!(by_row.stdout, show.stdout, "a row id finds the same");
    let table = dlq_cli(&w, &["list"]).await.stdout;
    for output in [&json.stdout, &show.stdout, &table] {
        assert!(!output.contains("tok_dlq_json_secret"), "{output}");
        assert!(!output.contains("tok_header_secret"), "{output}");
    }
    assert!(!captured_logs().contains("tok_dlq_json_secret"));
    let unknown = dlq_cli(&w, &["show", "nope"]).await;
    assert!(!unknown.success);
    assert_eq!(
        human(&unknown.stderr),
        "wallet-worker: no dead letter with message id or row id nope"
    );
    w.stop().await;
}
