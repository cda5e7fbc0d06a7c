//! Broker and database outages under load: nothing acked without its commit, nothing
//! lost, nothing dead-lettered because of the outage, and readiness tells the truth.

use crate::accounting::Ledger;
use crate::helpers::*;
use crate::proxy::Proxy;
use std::time::Duration;

async fn ready(w: &TestWorker) -> bool {
    reqwest::get(format!("http://{}/readyz", w.admin_addr))
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn wait_for_readiness(w: &TestWorker, expected: bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while ready(w).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never became {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dropped_broker_connection_under_load_loses_nothing() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut args = test_args();
    args.amqp.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let published = publish_saves(&w, "brk", 600).await;
    // Let some complete, then drop every worker connection for a few seconds.
    w.wait_for_at_least("SELECT count(*) FROM processed_messages", 50)
        .await;
    proxy.cut().await;
    wait_for_readiness(&w, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    wait_for_readiness(&w, true).await;
    let ledger = Ledger::collect(&mut w, &published, Duration::from_secs(60)).await;
    let (lost, duplicated) = ledger.report("broker-outage", &published);

    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(w.dead_letter_count().await, 0);
    w.stop().await;
}

/// Seconds Postgres stays unreachable; `WALLET_TEST_DB_OUTAGE_SECS` changes it.
fn db_outage() -> Duration {
    let secs = std::env::var("WALLET_TEST_DB_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

#[tokio::test]
async fn postgres_unreachable_for_30s_under_load_loses_nothing_and_dead_letters_nothing() {
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut args = test_args();
    let database = uuid::Uuid::new_v4().simple().to_string();
    args.db.database_url = format!("postgres://postgres@{}/wallet_test_{database}", proxy.addr);
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let published = publish_saves(&w, "pg", 600).await;
    w.wait_for_at_least("SELECT count(*) FROM processed_messages", 50)
        .await;
    proxy.cut().await;
    wait_for_readiness(&w, false).await;
    tokio::time::sleep(db_outage()).await;
    proxy.restore();
    wait_for_readiness(&w, true).await;
    let ledger = Ledger::collect(&mut w, &published, Duration::from_secs(90)).await;
    let (lost, duplicated) = ledger.report("postgres-outage", &published);
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(
        w.dead_letter_count().await,
        0,
        "no message dead-lettered because of the outage"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources")
            .await,
        600
    );
    w.stop().await;
}
