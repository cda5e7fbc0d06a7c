//! A regression guard for the commit path's cost: database round trips per message
//! when a backlog of saves is worked off in batches (the benchmark's traffic).

use crate::helpers::*;
use crate::pg_counter::RoundTripCounter;

/// The figure this guard holds (measured: see the test's output line). A change that
/// adds per-message statements to the commit path fails here.
const MAX_ROUND_TRIPS_PER_MESSAGE: f64 = 0.25;
/// Enough that the worker's start (migrations check, listeners) weighs little.
const MESSAGES: usize = 1000;

#[tokio::test]
async fn a_backlog_of_saves_costs_few_database_round_trips_per_message() {
    let mut args = test_args();
    args.prefetch = 256;
    let mut setup = spawn_worker_with(args.clone()).await;
    setup.gateway_accepts().await;
    setup.pause_in_process_worker().await;
    publish_saves(&setup, "rt", MESSAGES).await;

    let counter = RoundTripCounter::start("127.0.0.1:5432".parse().unwrap()).await;
    let database = args.db.database_url.rsplit('/').next().unwrap().to_owned();
    args.db.database_url = format!("postgres://postgres@{}/{database}", counter.addr);
    // The worker under test talks to Postgres only through the counter; the test's own
    // queries use the setup worker's pool, which goes straight to Postgres.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = wallet_worker::worker::start(args, shutdown.clone())
        .await
        .expect("worker starts");
    setup
        .wait_for_count("SELECT count(*) FROM processed_messages", MESSAGES as i64)
        .await;
    let per_message = counter.count() as f64 / MESSAGES as f64;
    let metrics = reqwest::get(format!("http://{}/metrics", running.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let batches = value("wallet_commit_batch_messages_count");
    println!(
        "[round-trips] messages={MESSAGES} round_trips_per_message={per_message:.3} commits={batches} messages_per_commit={:.1}",
        value("wallet_commit_batch_messages_sum") / batches
    );
    assert!(
        per_message <= MAX_ROUND_TRIPS_PER_MESSAGE,
        "{per_message:.3} round trips per message (guard: {MAX_ROUND_TRIPS_PER_MESSAGE})"
    );
    shutdown.cancel();
    running.task.await.unwrap().unwrap();
    setup.stop().await;
}
