//! The leak test of the dead-letter store (docs/interface.md, secrets): messages whose
//! secret fields — every name the interface lists — hold a string, a number, an object
//! and an array are dead-lettered (malformed ones, a body that is not JSON, a business
//! dead letter), then read through every output: the worker's log, `dlq list` (table
//! and `--json`), `dlq show`, `dlq summary`, the console's dead-letter pages, the
//! `wallet.dead_lettered` events and the stored rows themselves (raw columns: only
//! ciphertext). No secret value appears in any of them.

use crate::helpers::*;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Value, json};

/// Every secret field name docs/interface.md lists (and examples of its patterns).
const FIELDS: [&str; 8] = [
    "payment_source_token",
    "customer_token",
    "secret",
    "card_token",
    "client_secret",
    "apiToken",
    "password",
    "authorization",
];

/// Secret values of one JSON type, each with the plaintext fragments that must never
/// be seen.
struct Secrets {
    found: Vec<String>,
    next: u64,
}

impl Secrets {
    /// A value of JSON type `kind` (0 string, 1 number, 2 object, 3 array).
    fn value(&mut self, kind: usize) -> Value {
        self.next += 1;
        let n = 7_310_000_000_000_000 + self.next;
        let text = format!("lk_{}_{}", ["str", "num", "obj", "arr"][kind], self.next);
        let (value, fragments) = match kind {
            0 => (json!(text), vec![text]),
            1 => (json!(n), vec![n.to_string()]),
            2 => (json!({ "inner": text, "n": n }), vec![text, n.to_string()]),
            _ => (json!([text, n]), vec![text, n.to_string()]),
        };
        self.found.extend(fragments);
        value
    }

    /// Every secret field, of JSON types rotating from `first`.
    fn fields(&mut self, first: usize) -> serde_json::Map<String, Value> {
        FIELDS
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), self.value((first + i) % 4)))
            .collect()
    }
}

fn properties(id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert("x-note".into(), AMQPValue::LongString("from a test".into()));
    BasicProperties::default()
        .with_message_id(id.into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers)
}

#[tokio::test]
async fn no_secret_of_a_dead_letter_reaches_any_output_or_the_stored_rows() {
    let mut w = spawn_worker().await;
    let mut secrets = Secrets {
        found: Vec::new(),
        next: 0,
    };
    let customer = unique("cus");
    let mut ids = Vec::new();
    let mut outputs: Vec<(String, String)> = Vec::new();

    // Malformed: the payment source token as a number, an object and an array (and a
    // string where the order is broken elsewhere), beside every other secret field.
    for kind in 0..4 {
        let mut msg = order_placed(&unique("ord"), &customer, "unused", true);
        let order = &mut msg["data"]["order"];
        order["payment_source"]["payment_source_token"] = secrets.value(kind);
        order["payment_source"]["metadata"] = Value::Object(secrets.fields(kind + 1));
        order["extra"] = Value::Object(secrets.fields(kind + 2));
        if kind == 0 {
            order["status"] = json!(["not", "a", "status"]);
        }
        let id = msg["id"].as_str().unwrap().to_owned();
        w.publish_raw(
            "order.placed",
            &serde_json::to_vec(&msg).unwrap(),
            properties(&id),
        )
        .await;
        ids.push(id);
    }
    // Not JSON at all: cut short after its secret fields.
    let cut = unique("cut");
    let fields = serde_json::to_string(&secrets.fields(3)).unwrap();
    let body = format!(
        r#"{{"id":"{cut}","type":"order.placed","data":{{"order":{}"#,
        &fields[..fields.len() - 1]
    );
    w.publish_raw("order.placed", body.as_bytes(), properties(&cut))
        .await;
    ids.push(cut);
    // A business dead letter: a save for an order never placed (order_not_found once
    // its attempts run out), carrying every secret field.
    let mut save = wallet_save(&unique("ord"));
    save["data"]["extra"] = Value::Object(secrets.fields(0));
    save["data"]["payment_source_token"] = secrets.value(0);
    let id = save["id"].as_str().unwrap().to_owned();
    w.publish_raw(
        "wallet.save",
        &serde_json::to_vec(&save).unwrap(),
        properties(&id),
    )
    .await;
    ids.push(id);

    for id in &ids {
        let dead = w.dead_lettered_event(Some(id)).await;
        outputs.push((
            format!("wallet.dead_lettered of {id}"),
            dead.body.to_string(),
        ));
    }
    let errors: i64 = w
        .count("SELECT count(*) FROM dead_letters WHERE error = 'order_not_found'")
        .await;
    assert_eq!(errors, 1, "the business dead letter is stored");
    assert_eq!(w.count("SELECT count(*) FROM dead_letters").await, 6);

    // The CLI.
    let db = w.args.db.database_url.clone();
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["dlq", "list"],
        vec!["dlq", "list", "--json"],
        vec!["dlq", "summary"],
        vec!["dlq", "summary", "--json"],
        vec!["dlq", "replay", "--all", "--dry-run"],
        vec!["dlq", "purge", "--all", "--dry-run"],
    ];
    commands.extend(ids.iter().map(|id| vec!["dlq", "show", id.as_str()]));
    for args in &commands {
        let out = run_cli(&db, args).await;
        assert!(out.success, "{args:?}: {}", out.stderr);
        outputs.push((args.join(" "), format!("{}\n{}", out.stdout, out.stderr)));
    }
    let shown = &outputs
        .iter()
        .find(|(name, _)| name.starts_with("dlq show"))
        .unwrap()
        .1;
    assert!(shown.contains("[redacted]"), "dlq show masks: {shown}");
    let listed = &outputs
        .iter()
        .find(|(name, _)| name == "dlq list --json")
        .unwrap()
        .1;
    assert!(
        ids.iter().all(|id| listed.contains(id.as_str())),
        "{listed}"
    );

    // The console: the groups, the lists, each dead letter, the history.
    let basic = format!(
        "Basic {}",
        BASE64_STANDARD.encode(format!("ops:{ADMIN_TOKEN}"))
    );
    let mut pages = vec![
        "/ui/dlq".to_owned(),
        "/ui/dlq/list".to_owned(),
        "/ui/dlq/list?error=malformed".to_owned(),
        "/ui/dlq/history".to_owned(),
        "/ui/".to_owned(),
    ];
    pages.extend(ids.iter().map(|id| format!("/ui/dlq/show?id={id}")));
    for page in pages {
        let (status, html) = w.admin_get(&page, Some(&basic)).await;
        assert_eq!(status, 200, "{page}: {html}");
        outputs.push((format!("console {page}"), html));
    }

    // The stored rows, every column as Postgres prints it.
    for table in ["dead_letters", "dead_letter_groups", "audit_log", "outbox"] {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(&w.pool)
            .await
            .expect(table);
        outputs.push((format!("stored {table}"), rows.join("\n")));
    }
    outputs.push(("worker log".to_owned(), captured_logs()));

    let mut hits = Vec::new();
    for (output, text) in &outputs {
        for secret in &secrets.found {
            if text.contains(secret.as_str()) {
                hits.push(format!("{secret} in {output}"));
            }
        }
    }
    assert!(
        secrets.found.len() > 100,
        "{} secret values",
        secrets.found.len()
    );
    assert!(hits.is_empty(), "secrets leaked: {hits:#?}");
    w.stop().await;
}

/// Dead letters are in the sealed list: `keys rotate`'s batches re-seal their bodies
/// and headers (and an outbox event's absent headers stay absent), after which the old
/// key can go and every dead letter still opens; a row copied to another id does not.
#[tokio::test]
async fn dead_letters_rotate_to_a_new_key_and_stay_bound_to_their_row() {
    use wallet_worker::crypto::DataKeys;
    use wallet_worker::domain::Secret;
    use wallet_worker::store::dead_letters::query;
    use wallet_worker::store::keys::{self, DEAD_LETTERS, OUTBOX};
    let mut w = spawn_worker().await;
    let mut msg = order_placed(&unique("ord"), &unique("cus"), "unused", true);
    msg["data"]["order"]["payment_source"]["payment_source_token"] = json!(4242424242424242u64);
    let id = msg["id"].as_str().unwrap().to_owned();
    w.publish_unchecked("order.placed", &msg).await;
    w.dead_lettered_event(Some(&id)).await;
    // An event's outbox row (no headers), dated ahead so no relay sweep takes it.
    let keyring = test_keyring(&w.pool).await;
    let sealed = keyring.seal(b"{}", OUTBOX.row("body", "evt-rotate"));
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, key_id, body, created_at)
         VALUES ('evt-rotate', 'wallet.saved', $1, $2, now() + interval '1 hour')",
    )
    .bind(&*sealed.key_id)
    .bind(&sealed.bytes)
    .execute(&w.pool)
    .await
    .unwrap();

    let new = DataKeys::generate_entry("k-new");
    let both = Secret::new(format!("{},{TEST_KEYS}", new.expose()));
    let keyring = keys::keyring(&w.pool, DataKeys::parse(&both).unwrap())
        .await
        .unwrap();
    for table in [&DEAD_LETTERS, &OUTBOX] {
        let n = keys::rotate_batch(&w.pool, &keyring, table, "test-2026", 100)
            .await
            .expect("rotates");
        assert!(n >= 1, "{}: {n}", table.table);
    }
    let only_new = DataKeys::parse(&new).unwrap();
    let letters = query::show(&w.pool, &only_new, &id).await.expect("opens");
    assert_eq!(letters.len(), 1);
    let body: Value = serde_json::from_slice(&letters[0].body).unwrap();
    assert_eq!(body["id"], id.as_str());
    let event_headers: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT headers FROM outbox WHERE event_id = 'evt-rotate'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(event_headers, None);

    // The sealed body of this row, copied to another row, does not open there.
    let other = sqlx::query_scalar::<_, i64>(
        "INSERT INTO dead_letters (dedupe_key, error, detail, group_key, dead_lettered_at,
                                   key_id, body, headers, properties)
         SELECT '\\x00', error, detail, group_key, dead_lettered_at, key_id, body, headers,
                properties
         FROM dead_letters WHERE message_id = $1 RETURNING id",
    )
    .bind(&id)
    .fetch_one(&w.pool)
    .await
    .unwrap();
    let err = query::show(&w.pool, &only_new, &other.to_string())
        .await
        .expect_err("bound to its row");
    assert!(err.to_string().contains("does not open"), "{err:#}");
    w.stop().await;
}
