//! Who may reach what (docs/interface.md, command line; docs/interface.md, the token_url call; docs/interface.md, admin HTTP): the read API's bearer token, the loopback
//! default of the admin server, the token_url rules and redirects, and the TLS URLs for
//! the broker and Postgres.

use crate::helpers::*;
use clap::Parser;
use serde_json::Value;
use std::str::FromStr;
use wallet_worker::config::{Cli, Cmd};
use wallet_worker::domain::Secret;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn sources_path(customer: &str) -> String {
    format!("/v1/customers/{customer}/customer_payment_sources")
}

#[tokio::test]
async fn the_read_api_answers_401_without_the_right_bearer_token_and_never_shows_tokens() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let (customer, token) = (unique("cus"), unique("tok_access"));
    let msg = order_placed(&unique("ord"), &customer, &token, true);
    w.publish("order.placed", &msg).await;
    assert_eq!(
        w.event_caused_by(msg["id"].as_str().unwrap())
            .await
            .routing_key,
        "wallet.saved"
    );
    let path = sources_path(&customer);
    let wrong_ones = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Basic {ADMIN_TOKEN}")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
    ];
    for authorization in wrong_ones {
        let (status, body) = w.admin_get(&path, authorization.as_deref()).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert!(!body.contains(&customer), "a refusal reveals nothing");
    }
    let (status, body) = w
        .admin_get(&path, Some(&format!("Bearer {ADMIN_TOKEN}")))
        .await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("JSON:API");
    let data = doc["data"].as_array().expect("a list");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["type"], "customer_payment_sources");
    assert_eq!(data[0]["id"].as_str().map(str::len), Some(10));
    let attributes = data[0]["attributes"].as_object().expect("attributes");
    assert!(
        attributes.keys().all(|k| !k.contains("token")),
        "{attributes:?}"
    );
    for secret in [
        source_token_for(&token),
        token,
        customer_token_for(&customer),
    ] {
        assert!(!body.contains(&secret));
    }
    w.stop().await;
}

#[tokio::test]
async fn a_worker_without_an_admin_token_refuses_every_read_api_call() {
    let mut args = test_args();
    args.admin_token = None;
    let w = spawn_worker_with(args).await;
    let right = format!("Bearer {ADMIN_TOKEN}");
    for authorization in [None, Some("Bearer "), Some("Bearer"), Some(right.as_str())] {
        let (status, _) = w.admin_get(&sources_path("cus_1"), authorization).await;
        assert_eq!(status, 401, "{authorization:?}");
    }
    let (status, _) = w.admin_get("/healthz", None).await;
    assert_eq!(status, 200, "health stays open");
    w.stop().await;
}

#[tokio::test]
async fn an_empty_admin_token_does_not_open_the_read_api() {
    let mut args = test_args();
    args.admin_token = Some(Secret::new(""));
    let w = spawn_worker_with(args).await;
    for authorization in [None, Some("Bearer ")] {
        let (status, _) = w.admin_get(&sources_path("cus_1"), authorization).await;
        assert_eq!(status, 401, "{authorization:?}");
    }
    w.stop().await;
}

#[test]
fn the_admin_server_listens_on_loopback_by_default() {
    let cli = Cli::try_parse_from(["wallet-worker", "run"]).expect("`run` parses");
    let Cmd::Run(args) = cli.command else {
        panic!("run")
    };
    assert_eq!(args.admin_addr, "127.0.0.1:9090".parse().unwrap());
    assert!(args.admin_addr.ip().is_loopback());
    assert!(
        args.admin_token.is_none(),
        "the read API is off unless a token is given"
    );
}

#[tokio::test]
async fn gateway_set_refuses_plain_http_to_another_host_and_accepts_https_or_loopback() {
    let db = format!("{PG_BASE}/wallet_test_{}", uuid::Uuid::new_v4().simple());
    let mut cleanup = Cleanup::default();
    cleanup.database_of(&db);
    let secret = [("WALLET_GATEWAY_SECRET", "s3cret")];
    let refused = run_cli_with(
        &db,
        &secret,
        &[
            "gateway",
            "set",
            "g1",
            "--token-url",
            "http://example.com/token",
        ],
    )
    .await;
    assert!(!refused.success);
    assert!(refused.stdout.is_empty());
    // One human line (log lines, JSON at RUST_LOG=trace, aside).
    let lines: Vec<_> = refused
        .stderr
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("wallet-worker: token_url must use https"),
        "{lines:?}"
    );
    for url in ["http://127.0.0.1:1/token", "https://pay.example.com/token"] {
        let accepted =
            run_cli_with(&db, &secret, &["gateway", "set", "g1", "--token-url", url]).await;
        assert!(accepted.success, "{url}: {}", accepted.stderr);
        let listed = run_cli(&db, &["gateway", "list", "--json"]).await;
        assert!(listed.stdout.contains(url), "{}", listed.stdout);
    }
}

/// The gateway answers every save with `status` and `Location: location`.
async fn gateway_redirects(w: &TestWorker, status: u16, location: &str) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(status).insert_header("Location", location))
        .mount(&w.gateway)
        .await;
}

#[tokio::test]
async fn a_token_url_redirecting_to_another_origin_is_not_followed() {
    let mut w = spawn_worker().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    for status in [307, 308, 302] {
        w.gateway.reset().await;
        gateway_redirects(&w, status, &format!("{}/token", elsewhere.uri())).await;
        let msg = order_placed(&unique("ord"), &unique("cus"), &unique("tok"), true);
        w.publish("order.placed", &msg).await;
        let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
        assert_eq!(event.routing_key, "wallet.save_failed", "{status}");
        assert_eq!(event.data()["reason"], "gateway_refused");
    }
    let reached = elsewhere.received_requests().await.unwrap_or_default();
    assert!(
        reached.is_empty(),
        "the signed card data went to another origin"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_307_within_the_same_origin_is_followed_with_the_signed_body() {
    let mut w = spawn_worker().await;
    gateway_redirects(&w, 307, &format!("{}/moved", w.gateway.uri())).await;
    Mock::given(method("POST"))
        .and(path("/moved"))
        .respond_with(SigningGateway)
        .mount(&w.gateway)
        .await;
    let msg = order_placed(&unique("ord"), &unique("cus"), &unique("tok"), true);
    w.publish("order.placed", &msg).await;
    assert_eq!(
        w.event_caused_by(msg["id"].as_str().unwrap())
            .await
            .routing_key,
        "wallet.saved"
    );
    w.stop().await;
}

#[test]
fn an_amqps_url_selects_tls_on_port_5671() {
    use lapin::uri::{AMQPScheme, AMQPUri};
    let uri = AMQPUri::from_str("amqps://user:pass@broker.example.com/%2f").expect("amqps parses");
    assert_eq!(uri.scheme, AMQPScheme::AMQPS);
    assert_eq!(uri.authority.port, 5671);
    let plain = AMQPUri::from_str("amqp://guest:guest@127.0.0.1/%2f").expect("amqp parses");
    assert_eq!(
        (plain.scheme, plain.authority.port),
        (AMQPScheme::AMQP, 5672)
    );
}

#[test]
fn a_postgres_url_with_sslmode_require_or_verify_full_asks_for_tls() {
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let options = |url| PgConnectOptions::from_str(url).expect("URL parses");
    let require = options("postgres://wallet@db.example.com/wallet?sslmode=require");
    assert!(matches!(require.get_ssl_mode(), PgSslMode::Require));
    let full = options("postgres://wallet@db.example.com/wallet?sslmode=verify-full");
    assert!(matches!(full.get_ssl_mode(), PgSslMode::VerifyFull));
}
