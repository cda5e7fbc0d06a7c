//! The admin server: health, readiness and metrics that move with traffic.

use crate::helpers::*;

async fn get(w: &TestWorker, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{}{path}", w.admin_addr))
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// The value of a Prometheus sample whose line starts with `prefix`, or 0.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(name) && labels.iter().all(|l| line.contains(l)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn healthz_and_readyz_answer_when_broker_and_database_are_up() {
    let w = spawn_worker().await;
    assert_eq!(get(&w, "/healthz").await.0, 200);
    let (status, body) = get(&w, "/readyz").await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "broker": true,
            "database": true,
            "node": "amqp://guest:***@127.0.0.1:5672/%2f",
        })
    );
    w.stop().await;
}

#[tokio::test]
async fn metrics_move_after_traffic() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let (_, before) = get(&w, "/metrics").await;
    let saved = r#"outcome="saved""#;
    let saved_before = sample(&before, "wallet_messages_total", &[saved]);
    w.publish(
        "order.placed",
        &order_placed("ord_m1", "cus_m", "tok_m1", true),
    )
    .await;
    w.next_event().await;
    w.publish_raw(
        "order.placed",
        b"not json",
        lapin::BasicProperties::default(),
    )
    .await;
    w.next_dead_letter().await;

    let (status, after) = get(&w, "/metrics").await;
    assert_eq!(status, 200);
    assert!(sample(&after, "wallet_messages_total", &[saved]) >= saved_before + 1.0);
    assert!(sample(&after, "wallet_gateway_calls_total", &[r#"status="200""#]) >= 1.0);
    assert!(
        sample(
            &after,
            "wallet_message_seconds_count",
            &[r#"type="order.placed""#]
        ) >= 1.0
    );
    assert!(
        sample(
            &after,
            "wallet_dead_letters_total",
            &[r#"kind="malformed""#]
        ) >= 1.0
    );
    assert!(after.contains("wallet_deliveries_in_flight"));
    assert!(after.contains("wallet_broker_connected 1"));
    w.stop().await;
}

/// `WALLET_METRICS_ADDR` (docs/interface.md, admin HTTP): a listener with only what
/// Prometheus and probes need; the console and the read API stay on the admin address.
#[tokio::test]
async fn the_metrics_listener_serves_metrics_and_probes_only_while_the_admin_address_serves_everything()
 {
    let mut args = test_args();
    args.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let w = spawn_worker_with(args).await;
    let metrics = w.metrics_addr.expect("a metrics listener");
    let get = |addr: std::net::SocketAddr, path: &str, auth: bool| {
        let mut request = reqwest::Client::new().get(format!("http://{addr}{path}"));
        if auth {
            request = request.header("Authorization", format!("Bearer {ADMIN_TOKEN}"));
        }
        async move { request.send().await.expect("answers").status().as_u16() }
    };
    let api = "/v1/customers/cus_x/customer_payment_sources";
    for (path, expected) in [
        ("/metrics", 200),
        ("/healthz", 200),
        ("/readyz", 200),
        ("/ui/", 404),
        (api, 404),
    ] {
        assert_eq!(
            get(metrics, path, true).await,
            expected,
            "{path} on the metrics listener"
        );
    }
    let text = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("wallet_ready 1"), "{text}");
    assert_eq!(get(w.admin_addr, api, true).await, 200);
    assert_eq!(get(w.admin_addr, "/ui/", false).await, 401);
    w.stop().await;
}
