//! Data-encryption keys (docs/operations.md, key management): a ciphertext copied to
//! another row does not open, a key missing for a stored row fails loudly, and a
//! rotation under load, killed mid-way and resumed, leaves every row under the new key
//! so the old one can go; a message waiting for a delayed retry is sealed and rotated
//! like every other stored secret.

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;
use wallet_worker::crypto::DataKeys;
use wallet_worker::domain::Secret;
use wallet_worker::store::keys::{ORDERS, SOURCES};

const OLD: &str = "old-2025:HmGg6ZCFz5CrBwsVKeRC+qElWEEd2C6c4R63AD7Ok9s=";
const NEW: &str = "new-2026:9E0eXUv8XMu3cxI8cNpHf4ZrBWlpE1Ph9HsTYCaE0qk=";

fn keys(text: &str) -> DataKeys {
    DataKeys::parse(&Secret::new(text)).unwrap()
}

async fn saved_source(w: &mut TestWorker, customer: &str, token: &str) -> String {
    let msg = order_placed(&unique("ord"), customer, token, true);
    w.publish("order.placed", &msg).await;
    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved", "{:?}", event.body);
    event.data()["customer_payment_source"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn attach_event(w: &mut TestWorker, customer: &str, source: &str) -> (String, Event) {
    let msg = wallet_attach(&unique("ord"), "pending", customer, source);
    w.publish("wallet.attach", &msg).await;
    let id = msg["id"].as_str().unwrap().to_owned();
    (id.clone(), w.event_caused_by(&id).await)
}

/// A message whose stored secret does not open ends as an `internal_error` dead letter
/// naming why, and never as an event.
async fn assert_dead_lettered_for(w: &mut TestWorker, customer: &str, source: &str, why: &str) {
    let msg = wallet_attach(&unique("ord"), "pending", customer, source);
    w.publish("wallet.attach", &msg).await;
    let dead = w.dead_lettered_event(msg["id"].as_str()).await;
    assert_eq!(dead.data()["error"], "internal_error");
    let detail = dead.data()["detail"].as_str().unwrap();
    assert!(detail.contains(why), "{detail}");
}

#[tokio::test]
async fn tokens_copied_from_another_row_do_not_open_and_no_event_carries_them() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved_source(&mut w, &customer, "tok_row_a").await;
    let b = saved_source(&mut w, &customer, "tok_row_b").await;
    sqlx::query(
        "UPDATE customer_payment_sources b
         SET customer_token_sealed = a.customer_token_sealed,
             payment_source_token_sealed = a.payment_source_token_sealed
         FROM customer_payment_sources a WHERE a.id = $1 AND b.id = $2",
    )
    .bind(&a)
    .bind(&b)
    .execute(&w.pool)
    .await
    .unwrap();
    assert_dead_lettered_for(&mut w, &customer, &b, "does not open with key test-2026").await;
    let (_, attached) = attach_event(&mut w, &customer, &a).await;
    assert_eq!(
        attached.data()["payment_source"]["payment_source_token"],
        source_token_for("tok_row_a")
    );
    w.assert_no_event_within(Duration::from_millis(300)).await;
    w.stop().await;
}

#[tokio::test]
async fn a_row_under_a_key_the_worker_lacks_makes_it_unready_naming_the_key_and_run_refuses_to_start()
 {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let source = saved_source(&mut w, &customer, "tok_foreign").await;
    // Re-sealed by someone holding another key (a replica with another configuration).
    let other = keys(OLD);
    let seal = |column| {
        other
            .seal(b"cus_foreign", SOURCES.row(column, &source))
            .bytes
    };
    sqlx::query(
        "UPDATE customer_payment_sources SET key_id = 'old-2025', customer_token_sealed = $2,
             payment_source_token_sealed = $3 WHERE id = $1",
    )
    .bind(&source)
    .bind(seal("customer_token"))
    .bind(seal("payment_source_token"))
    .execute(&w.pool)
    .await
    .unwrap();
    assert_dead_lettered_for(&mut w, &customer, &source, "sealed under key old-2025").await;
    let (status, body) = w.admin_get("/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["missing_keys"], serde_json::json!(["old-2025"]));

    // A worker that starts without that key refuses, in one line naming it; so does
    // `run` without any key.
    let mut args = w.args.clone();
    args.admin_addr.set_port(0);
    let refused = wallet_worker::worker::start(args.into(), Default::default()).await;
    let line = wallet_worker::cli::one_line(&refused.err().expect("refused"));
    assert!(
        line.contains("old-2025") && line.contains("WALLET_ENCRYPTION_KEYS"),
        "{line}"
    );
    let db = w.args.db.database_url.clone();
    let run = run_cli_with(&db, &[("WALLET_ENCRYPTION_KEYS", "")], &["run"]).await;
    assert!(!run.success);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("WALLET_ENCRYPTION_KEYS"),
        "{}",
        run.stderr
    );
    w.stop().await;
}

/// `count(*)` of `table`'s rows sealed under `key_id`.
async fn under(w: &TestWorker, table: &str, column: &str, key_id: &str) -> i64 {
    w.count(&format!(
        "SELECT count(*) FROM {table} WHERE {column} = '{key_id}'"
    ))
    .await
}

/// Placed orders sealed under the worker's active key, as `order.placed` would store them.
async fn placed_orders(w: &TestWorker, customer: &str, count: usize) {
    let ids: Vec<String> = (0..count).map(|i| format!("ord_rot_{i}")).collect();
    let sealed: Vec<Vec<u8>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let token = Secret::new(format!("tok_rot_{i}"));
            w.keys
                .seal_secret(&token, ORDERS.row("payment_source_token", id))
                .bytes
        })
        .collect();
    sqlx::query(
        "INSERT INTO orders (id, customer_id, status, payment_source_type, payment_source_id,
             gateway_id, token_key_id, payment_source_token_sealed, placed_at)
         SELECT id, $2, 'placed', 'external_payments', 'ps_' || id, $3, $4, token, now()
         FROM UNNEST($1::text[], $5::bytea[]) AS t(id, token)",
    )
    .bind(&ids)
    .bind(customer)
    .bind(GATEWAY_ID)
    .bind(w.keys.active_id())
    .bind(&sealed)
    .execute(&w.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_rotation_under_load_killed_mid_way_resumes_and_then_the_old_key_can_go() {
    let mut args = test_args();
    args.keys = Some(keys(OLD));
    let mut w = spawn_worker_with(args.clone()).await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let card = saved_source(&mut w, &customer, "tok_rotated").await;
    sqlx::query("INSERT INTO customers (id) VALUES ($1)")
        .bind(&customer)
        .execute(&w.pool)
        .await
        .ok();
    placed_orders(&w, &customer, 600).await;
    w.pause_in_process_worker().await;

    // The new key becomes active while the old one is still held; traffic goes on.
    args.keys = Some(keys(&format!("{NEW},{OLD}")));
    let mut w2 = spawn_worker_with(args.clone()).await;
    w2.gateway_accepts().await;
    let db = args.db.database_url.clone();
    let both = [("WALLET_ENCRYPTION_KEYS", format!("{NEW},{OLD}"))];
    let env: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let status = run_cli_with(&db, &env, &["keys", "status"]).await;
    assert!(
        status
            .stdout
            .contains("rows are not under the active key new-2026"),
        "{}",
        status.stdout
    );

    let mut rotation = tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
        .args(["keys", "rotate", "--rate", "150"])
        .env_clear()
        .env("DATABASE_URL", &db)
        .env("WALLET_ENCRYPTION_KEYS", format!("{NEW},{OLD}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    publish_saves(&w2, "rot", 30).await;
    w2.wait_for_at_least(
        "SELECT count(*) FROM orders WHERE token_key_id = 'new-2026' AND id LIKE 'ord_rot_%'",
        150,
    )
    .await;
    rotation.kill().await.unwrap(); // SIGKILL
    let (old, new) = (
        under(&w2, "orders", "token_key_id", "old-2025").await,
        under(&w2, "orders", "token_key_id", "new-2026").await,
    );
    assert!(old > 0, "killed mid-way ({old} left under the old key)");
    assert!(new >= 150, "{new}");

    let resumed = run_cli_with(&db, &env, &["keys", "rotate", "--rate", "100000"]).await;
    assert!(resumed.success, "{}{}", resumed.stdout, resumed.stderr);
    let status = run_cli_with(&db, &env, &["keys", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status["unused"],
        serde_json::json!(["old-2025"]),
        "{status}"
    );
    assert!(status["rows"].get("old-2025").is_none(), "{status}");
    for _ in 0..30 {
        w2.next_event().await;
    }
    w2.pause_in_process_worker().await;

    // The old key removed: the worker starts, and every secret still opens.
    args.keys = Some(keys(NEW));
    let mut w3 = spawn_worker_with(args).await;
    w3.gateway_accepts().await;
    let (_, attached) = attach_event(&mut w3, &customer, &card).await;
    assert_eq!(
        attached.data()["payment_source"]["payment_source_token"],
        source_token_for("tok_rotated")
    );
    let save = wallet_save("ord_rot_599");
    w3.publish("wallet.save", &save).await;
    let saved = w3.event_caused_by(save["id"].as_str().unwrap()).await;
    assert_eq!(saved.routing_key, "wallet.saved");
    let again = order_placed(&unique("ord"), &customer, "tok_rotated", true);
    w3.publish("order.placed", &again).await;
    let same = w3.event_caused_by(again["id"].as_str().unwrap()).await;
    assert_eq!(
        same.data()["created"],
        false,
        "the same card, found by its fingerprint"
    );
    assert_eq!(same.data()["customer_payment_source"]["id"], card.as_str());
    w3.stop().await;
    w2.stop().await;
    w.stop().await;
}

/// The one delayed retry's key id, and whether its stored body shows `token`.
async fn delayed_row(w: &TestWorker, token: &str) -> (String, bool) {
    let (key_id, body): (String, Vec<u8>) =
        sqlx::query_as("SELECT key_id, body FROM delayed_messages")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    let shows = body.windows(token.len()).any(|w| w == token.as_bytes());
    (key_id, shows)
}

#[tokio::test]
async fn a_delayed_retry_is_sealed_at_rest_rotated_with_the_rest_and_republished_under_the_new_key()
{
    let mut args = test_args();
    args.keys = Some(keys(OLD));
    // One attempt fails; its retry waits ten minutes unless the test makes it due.
    (args.retry_base_ms, args.retry_max_ms) = (600_000, 600_000);
    let mut w = spawn_worker_with(args.clone()).await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(503))
        .mount(&w.gateway)
        .await;
    let token = "tok_waiting_in_delayed_retry";
    let msg = order_placed(&unique("ord"), &unique("cus"), token, true);
    w.publish("order.placed", &msg).await;
    w.wait_for_count("SELECT count(*) FROM delayed_messages", 1)
        .await;
    assert_eq!(delayed_row(&w, token).await, ("old-2025".to_owned(), false));
    w.pause_in_process_worker().await;

    let db = args.db.database_url.clone();
    let both = format!("{NEW},{OLD}");
    let env = [("WALLET_ENCRYPTION_KEYS", both.as_str())];
    let status = run_cli_with(&db, &env, &["keys", "status", "--json"]).await;
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        status["rows"]["old-2025"]["delayed_messages"], 1,
        "{status}"
    );
    let rotated = run_cli_with(&db, &env, &["keys", "rotate", "--rate", "100000"]).await;
    assert!(rotated.success, "{}{}", rotated.stdout, rotated.stderr);
    assert_eq!(delayed_row(&w, token).await, ("new-2026".to_owned(), false));

    // Only the new key: the worker starts, and the retry, made due once the gateway
    // accepts, opens and succeeds.
    args.keys = Some(keys(NEW));
    let mut w2 = spawn_worker_with(args).await;
    w2.gateway_accepts().await;
    sqlx::query("UPDATE delayed_messages SET due_at = now()")
        .execute(&w.pool)
        .await
        .unwrap();
    let saved = w2.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(saved.routing_key, "wallet.saved", "{:?}", saved.body);
    w2.wait_for_count("SELECT count(*) FROM delayed_messages", 0)
        .await;
    w2.stop().await;
    w.stop().await;
}
