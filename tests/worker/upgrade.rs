//! Upgrading a database an earlier version filled with plaintext secrets
//! (docs/operations.md, upgrading to sealed secrets): `migrate` seals them in batches,
//! a kill mid-way loses nothing, and afterwards the product reads every secret while
//! no column holds one in the clear.

use crate::helpers::*;
use serde_json::json;
use sqlx::PgPool;
use sqlx::migrate::MigrateDatabase;
use wallet_worker::domain::Secret;
use wallet_worker::gateway::verify;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const LEGACY_GATEWAY: &str = "legacy-pay";
const LEGACY_SECRET: &str = "whsec_legacy_plaintext_31c7";
/// Plaintext orders: more than two sealing batches, so a kill lands mid-way.
const ORDERS: usize = 1200;

fn order_token(i: usize) -> String {
    format!("tok_legacy_order_{i:04}")
}

/// A database at schema 0005 (before sealing) holding what the earlier version wrote:
/// a gateway, a saved card, placed orders, an unpublished `wallet.attached`.
async fn legacy_database(url: &str, token_url: &str) -> PgPool {
    sqlx::Postgres::create_database(url)
        .await
        .expect("database");
    let pool = PgPool::connect(url).await.expect("connect");
    let migrator = wallet_worker::store::migrations::up_to(5).await.unwrap();
    migrator.run(&pool).await.expect("schema 0005");
    let statements = [
        format!("INSERT INTO gateways (id, token_url, secret) VALUES ('{LEGACY_GATEWAY}', '{token_url}', '{LEGACY_SECRET}')"),
        "INSERT INTO customers (id) VALUES ('cus_legacy')".to_owned(),
        format!(
            "INSERT INTO customer_payment_sources (id, customer_id, gateway_id, name, customer_token, payment_source_token)
             VALUES ('LegacySrc1', 'cus_legacy', '{LEGACY_GATEWAY}', 'Visa ending in 4242', 'cus_tok_legacy', 'pst_tok_legacy_card')"
        ),
        format!(
            "INSERT INTO orders (id, customer_id, status, payment_source_type, payment_source_id, gateway_id,
                                 payment_source_token, placed_at)
             SELECT 'ord_legacy_' || lpad(i::text, 4, '0'), 'cus_legacy', 'placed', 'external_payments', 'ps_' || i,
                    '{LEGACY_GATEWAY}', 'tok_legacy_order_' || lpad(i::text, 4, '0'), now()
             FROM generate_series(0, {}) AS i", ORDERS - 1
        ),
    ];
    for sql in statements {
        sqlx::query(&sql).execute(&pool).await.expect(&sql);
    }
    let attached = json!({ "id": "evt-legacy", "type": "wallet.attached", "occurred_at": "2026-11-27T16:00:00Z",
        "causation_id": "msg-legacy",
        "data": { "order_id": "ord_new", "customer_id": "cus_legacy", "customer_payment_source_id": "LegacySrc1",
                  "payment_source": { "type": "external_payments", "gateway_id": LEGACY_GATEWAY,
                      "customer_token": "cus_tok_legacy", "payment_source_token": "pst_tok_legacy_card", "metadata": {} } } });
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, causation_id, body, created_at)
         VALUES ('evt-legacy', 'wallet.attached', 'msg-legacy', $1, now() - interval '1 minute')",
    )
    .bind(serde_json::to_vec(&attached).unwrap())
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Every row of every table, as text: where a plaintext secret would show.
async fn every_row(pool: &PgPool) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut text = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(pool)
            .await
            .unwrap();
        text.push_str(&rows.join("\n"));
    }
    text
}

/// The legacy gateway: checks the signature with the legacy secret and answers with
/// tokens derived from the order's token.
async fn legacy_gateway() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(|request: &Request| {
            let signature = request.headers.get("X-CommerceLayer-Signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !verify(&request.body, &Secret::new(LEGACY_SECRET), signature) {
                return ResponseTemplate::new(401);
            }
            let doc: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let token = doc["data"]["attributes"]["payment_source_token"].as_str().unwrap_or("");
            let answer = if token == order_token(7) { "pst_tok_legacy_card".to_owned() } else { format!("pst_{token}") };
            ResponseTemplate::new(200).set_body_json(json!({ "success": true,
                "data": { "customer_token": "cus_tok_legacy", "payment_source_token": answer, "metadata": {} } }))
        })
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn an_upgrade_killed_mid_way_loses_nothing_and_leaves_every_secret_sealed_and_usable() {
    let args = test_args();
    let gateway = legacy_gateway().await;
    let url = &args.db.database_url;
    let pool = legacy_database(url, &format!("{}/token", gateway.uri())).await;

    // Killed after the first batch of orders is sealed.
    let killed = run_cli_with(
        url,
        &[("FAILPOINTS", "plaintext.sealed=return(orders)")],
        &["migrate"],
    )
    .await;
    assert!(
        !killed.success,
        "the migration was killed: {}",
        killed.stdout
    );
    let (sealed, plain, neither): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE token_key_id IS NOT NULL),
                count(*) FILTER (WHERE payment_source_token IS NOT NULL),
                count(*) FILTER (WHERE token_key_id IS NULL AND payment_source_token IS NULL)
         FROM orders",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        sealed > 0 && plain > 0,
        "killed mid-way: {sealed} sealed, {plain} in plaintext"
    );
    assert_eq!(
        (sealed + plain, neither),
        (ORDERS as i64, 0),
        "no order lost its token"
    );
    let status = run_cli(url, &["keys", "status"]).await;
    assert!(
        status.success && status.stdout.contains("PLAINTEXT"),
        "{}",
        status.stdout
    );

    // The worker's start finishes the upgrade.
    let mut w = spawn_worker_with(args.clone()).await;
    let after = every_row(&w.pool).await;
    for secret in [
        "cus_tok_legacy",
        "pst_tok_legacy_card",
        LEGACY_SECRET,
        &order_token(0),
        &order_token(ORDERS - 1),
    ] {
        assert!(
            !after.contains(secret),
            "{secret} is still stored in plaintext"
        );
    }
    let status = run_cli(url, &["keys", "status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(status["rows"]["test-2026"]["orders"], ORDERS as i64);
    assert_eq!(status["plaintext"], json!({}));

    // The unpublished event goes out with its tokens.
    let legacy = w.event_caused_by("msg-legacy").await;
    assert_eq!(
        legacy.data()["payment_source"]["payment_source_token"],
        "pst_tok_legacy_card"
    );
    // The stored card attaches with its tokens.
    let attach = wallet_attach(&unique("ord"), "pending", "cus_legacy", "LegacySrc1");
    w.publish("wallet.attach", &attach).await;
    let attached = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(
        attached.data()["payment_source"]["customer_token"],
        "cus_tok_legacy"
    );
    assert_eq!(
        attached.data()["payment_source"]["payment_source_token"],
        "pst_tok_legacy_card"
    );
    // A sealed order's token reaches the gateway, signed with the upgraded secret; the
    // gateway answers with the card already saved: the same card, not a new one.
    let save = wallet_save("ord_legacy_0007");
    w.publish("wallet.save", &save).await;
    let saved = w.event_caused_by(save["id"].as_str().unwrap()).await;
    assert_eq!(saved.routing_key, "wallet.saved", "{:?}", saved.body);
    assert_eq!(saved.data()["created"], false);
    assert_eq!(saved.data()["customer_payment_source"]["id"], "LegacySrc1");
    let requests = gateway.received_requests().await.unwrap();
    assert!(String::from_utf8_lossy(&requests[0].body).contains(&order_token(7)));
    w.stop().await;
}
