//! A regression guard for the commit path's cost: a commit transaction takes at most
//! six round trips to Postgres whatever it holds (docs/running.md, how a message
//! flows), and prepares each of its statements once per connection. Both hold for any
//! batch size, so the guard does not depend on how the messages happen to batch.

use crate::helpers::*;
use crate::pg_counter::RoundTripCounter;

/// `BEGIN`; claim + customer locks + placed orders; wallets; wallet writes; outbox;
/// `COMMIT`. A change that adds a statement per message, or per customer, or per
/// anything else, makes even a batch of one cost more.
const MAX_ROUND_TRIPS_PER_COMMIT: u32 = 6;
/// A backlog, so that batches of many messages are committed (the benchmark's traffic).
const MESSAGES: usize = 300;

#[tokio::test]
async fn a_commit_transaction_takes_at_most_six_round_trips_whatever_it_holds() {
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
    let running = wallet_worker::worker::start(args.into(), shutdown.clone())
        .await
        .expect("worker starts");
    setup
        .wait_for_count("SELECT count(*) FROM processed_messages", MESSAGES as i64)
        .await;
    shutdown.cancel();
    running.task.await.unwrap().unwrap();

    let commits = counter.commit_transactions();
    let most = commits.iter().map(|c| c.round_trips).max().unwrap_or(0);
    let (prepared, distinct) = counter.preparations();
    println!(
        "[round-trips] messages={MESSAGES} commits={} max_round_trips_per_commit={most} statements_prepared={prepared} distinct={distinct}",
        commits.len()
    );
    assert!(
        !commits.is_empty(),
        "no commit transaction went through the counter"
    );
    assert!(
        most <= MAX_ROUND_TRIPS_PER_COMMIT,
        "a commit transaction took {most} round trips (at most {MAX_ROUND_TRIPS_PER_COMMIT}): {commits:?}"
    );
    assert_eq!(
        prepared, distinct,
        "a commit statement was prepared twice on one connection"
    );
    setup.stop().await;
}
