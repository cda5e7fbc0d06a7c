//! The Grafana dashboard and the alert rules query metrics by name: each of them must be
//! on `/metrics` once the worker has seen some traffic, and the counters the alerts
//! watch with `increase()` must exist at zero before their first event.

use crate::helpers::*;
use std::collections::BTreeSet;

/// Every `wallet_*` name in `file` (a histogram's `_bucket`, `_sum` and `_count` series
/// name the histogram).
fn metric_names(file: &str) -> BTreeSet<String> {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices("wallet_") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| at + n);
        let name = &text[at..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
    }
    names
}

/// The metric families on a `/metrics` page.
fn families(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alert_rules_query_is_exported() {
    let dashboard = metric_names("deploy/grafana/wallet-worker.json");
    let alerts = metric_names("deploy/prometheus/alerts.yml");
    assert!(dashboard.len() >= 10, "{dashboard:?}");
    assert!(alerts.len() >= 5, "{alerts:?}");

    let mut w = spawn_worker().await;
    // Before any traffic: the counters alerts take increase() of exist at zero.
    let (_, fresh) = w.admin_get("/metrics", None).await;
    for series in [
        r#"wallet_dead_letters_total{kind="malformed"} 0"#,
        r#"wallet_dead_letters_total{kind="poison_message"} 0"#,
        r#"wallet_panics_total{task="delivery"} 0"#,
        r#"wallet_panics_total{task="relay"} 0"#,
        r#"wallet_panics_total{task="committer"} 0"#,
        r#"wallet_retries_scheduled_total{kind="gateway_unavailable"} 0"#,
    ] {
        assert!(fresh.contains(series), "no {series} before traffic");
    }

    // Some traffic: a save (a gateway call) and a malformed message.
    w.gateway_accepts().await;
    w.publish(
        "order.placed",
        &order_placed("ord_dash", "cus_dash", "tok_dash", true),
    )
    .await;
    w.next_event().await;
    w.publish_raw(
        "order.placed",
        b"not json",
        lapin::BasicProperties::default(),
    )
    .await;
    w.wait_for_dead_letters(1).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let missing = loop {
        let (status, metrics) = w.admin_get("/metrics", None).await;
        assert_eq!(status, 200);
        let exported = families(&metrics);
        let missing: Vec<(&str, &String)> = dashboard
            .iter()
            .map(|name| ("dashboard", name))
            .chain(alerts.iter().map(|name| ("alert rules", name)))
            .filter(|(_, name)| !exported.contains(*name))
            .collect();
        // The DLQ depth and outbox backlog are sampled every few seconds.
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(missing.is_empty(), "not on /metrics: {missing:?}");
    w.stop().await;
}
