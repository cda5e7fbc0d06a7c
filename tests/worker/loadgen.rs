//! The load generator against a real worker and the real gateway-sim: every message it
//! expects an answer for is answered, and the answers left state behind.

use crate::helpers::*;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wallet_worker::domain::Secret;
use wallet_worker::tools::gateway_sim::{self as sim, SimConfig, SimStats};
use wallet_worker::tools::loadgen::{self, LoadgenConfig};

/// Serves the gateway-sim on a free port, signed with the test gateway secret, and
/// registers it as gateway `sim` in the worker's database.
async fn serve_sim(w: &TestWorker) -> (Arc<SimStats>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let url = format!("http://{}/token", listener.local_addr().expect("address"));
    let config = SimConfig {
        latency: Duration::from_millis(1),
        error_rate: 0.0,
        secret: Secret::new(GATEWAY_SECRET),
    };
    let (stats, stop) = (Arc::new(SimStats::default()), CancellationToken::new());
    tokio::spawn(sim::serve_with_stats(
        listener,
        config,
        stats.clone(),
        stop.clone().cancelled_owned(),
    ));
    register_gateway(&w.pool, "sim", &url).await;
    (stats, stop)
}

fn config(w: &TestWorker, count: u64) -> LoadgenConfig {
    LoadgenConfig {
        amqp_url: AMQP_URL.into(),
        exchange: w.args.amqp.exchange.clone(),
        count,
        rate: None,
        save_ratio: 0.5,
        gateway_id: "sim".into(),
        timeout: Duration::from_secs(60),
        seed: 42,
    }
}

#[tokio::test]
async fn loadgen_against_a_running_worker_completes_every_message() {
    let w = spawn_worker_with(test_args()).await;
    let (stats, stop_sim) = serve_sim(&w).await;

    let report = loadgen::run(config(&w, 300), false)
        .await
        .expect("loadgen runs");

    assert_eq!(report.published, 300, "{report}");
    assert_eq!(report.publish_failed, 0, "{report}");
    assert_eq!(report.missing, 0, "{report}");
    assert_eq!(
        report.expected,
        300 - report.unacknowledged_by_design,
        "{report}"
    );
    assert_eq!(report.completed_total, report.expected, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
    for kind in [
        "order.placed",
        "wallet.save",
        "wallet.attach",
        "wallet.set_default",
    ] {
        assert!(
            report.published_by_type.get(kind).is_some_and(|n| *n > 0),
            "no {kind}: {report}"
        );
    }
    let saved = report.completed["wallet.saved"];
    assert!(
        saved > 0 && report.completed["wallet.attached"] > 0,
        "{report}"
    );
    assert_eq!(report.saved_created + report.saved_reused, saved);
    assert!(
        report.saved_reused > 0,
        "cards repeat across orders: {report}"
    );
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    assert!(report.throughput_per_sec > 0.0);

    let rows = w
        .count("SELECT count(*) FROM customer_payment_sources")
        .await;
    let removed = report
        .completed
        .get("wallet.removed")
        .copied()
        .unwrap_or_default();
    assert_eq!(
        rows as u64,
        report.saved_created - removed,
        "one row per source created and not removed"
    );
    let attached = w
        .count("SELECT count(*) FROM orders WHERE customer_payment_source_id IS NOT NULL")
        .await;
    assert_eq!(attached as u64, report.completed["wallet.attached"]);
    assert_eq!(stats.signature_failures(), 0);
    assert!(stats.requests() >= report.saved_created);
    stop_sim.cancel();
    w.stop().await;
}

#[tokio::test]
async fn loadgen_fails_clearly_when_no_worker_queue_is_bound() {
    let args = test_args();
    let _cleanup = Cleanup::of_worker(&args);
    let config = LoadgenConfig {
        amqp_url: AMQP_URL.into(),
        exchange: args.amqp.exchange.clone(),
        count: 20,
        rate: Some(1000.0),
        save_ratio: 1.0,
        gateway_id: "sim".into(),
        timeout: Duration::from_secs(5),
        seed: 1,
    };
    let err = loadgen::run(config, false)
        .await
        .expect_err("nothing consumes");
    assert!(err.to_string().contains("no queue is bound"), "{err:#}");
}

#[tokio::test]
async fn demo_runs_end_to_end_on_its_own_queues_and_database() {
    let worker = test_args();
    let _cleanup = Cleanup::of_worker(&worker);
    let args = wallet_worker::config::DemoArgs {
        worker: worker.clone(),
        count: 120,
    };
    wallet_worker::cli::demo::run(args)
        .await
        .expect("the demo succeeds");

    let pool = wallet_worker::store::connect_existing(&worker.db.database_url)
        .await
        .expect("the demo's database");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(dead, 1, "the demo's malformed message, and nothing else");
    pool.close().await;
}
