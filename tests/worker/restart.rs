//! Real restarts under load: RabbitMQ (`rabbitmqctl stop_app` / `start_app`) and Postgres
//! (`pg_ctlcluster stop` / `start`). They restart the shared services, so nextest runs
//! them alone (see `.config/nextest.toml`).

use crate::accounting::Ledger;
use crate::helpers::*;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::HashSet;
use std::time::Duration;

async fn rabbitmqctl(args: &[&str]) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl runs (CI runs as root)");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// A durable queue that keeps the worker's events across the restart.
async fn durable_event_queue(channel: &lapin::Channel, exchange: &str, name: &str) {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("event queue");
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            "wallet.saved".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
}

#[tokio::test]
async fn broker_restart_under_load_loses_nothing() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let events = format!("{}.observer", w.args.amqp.queue);
    w.cleanup.queue(&events);
    durable_event_queue(&w.channel, &w.args.amqp.exchange, &events).await;
    let published = publish_saves(&w, "restart", 600).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.count("SELECT count(*) FROM processed_messages").await < 50 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rabbitmqctl(&["stop_app"]).await;
    rabbitmqctl(&["start_app"]).await;
    rabbitmqctl(&["await_startup"]).await;

    // Observe from a fresh connection; the worker reconnects on its own.
    let connection = wallet_worker::broker::connect(AMQP_URL, "test-observer")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            events.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let wanted: HashSet<&String> = published.iter().collect();
    let mut seen = Ledger::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while seen.completed() < published.len() && tokio::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        let cause = body["causation_id"].as_str().unwrap_or("").to_owned();
        if wanted.contains(&cause) {
            seen.record(cause, body["id"].as_str().unwrap_or("").to_owned());
        }
    }
    let (lost, duplicated) = seen.report("broker-restart", &published);
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    let _ = channel
        .queue_delete(events.as_str().into(), Default::default())
        .await;
    w.stop().await;
}

async fn pg_ctlcluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian Postgres cluster (CI's machine)")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .next()
        .expect("one cluster version");
    let status = tokio::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .args(if action == "stop" {
            &["-m", "fast"][..]
        } else {
            &[][..]
        })
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("pg_ctlcluster runs (CI runs as root)");
    assert!(status.success(), "pg_ctlcluster {action} failed");
}

/// Postgres really stopped (`pg_ctlcluster stop -m fast`) and started again under load.
/// It stops the shared Postgres, so nextest runs it alone (see `.config/nextest.toml`).
#[tokio::test]
async fn postgres_restart_under_load_loses_nothing_and_dead_letters_nothing() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let published = publish_saves(&w, "pgrestart", 600).await;
    w.wait_for_at_least("SELECT count(*) FROM processed_messages", 50)
        .await;
    pg_ctlcluster("stop").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg_ctlcluster("start").await;
    let ledger = Ledger::collect(&mut w, &published, Duration::from_secs(90)).await;
    let (lost, duplicated) = ledger.report("postgres-restart", &published);
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(
        w.dead_letter_count().await,
        0,
        "nothing dead-lettered by the outage"
    );
    w.stop().await;
}
