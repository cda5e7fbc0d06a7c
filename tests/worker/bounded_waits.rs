//! Bounded waits (docs/operations.md, broker and database outages): a lock held elsewhere
//! on a customer's row makes the commits of that customer's messages time out and wait;
//! `/readyz` says so with the cause, and is ready again once the lock goes; nothing is
//! lost or dead-lettered.

use crate::helpers::*;
use sqlx::Connection;
use std::time::Duration;

/// How long the other transaction holds the customer's row.
const HELD_FOR: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_customers_row_locked_for_a_minute_makes_the_worker_unready_with_the_cause_then_loses_nothing()
 {
    let mut args = test_args();
    args.commit_stall_secs = 10;
    args.db_lock_timeout_ms = 1_000;
    let w = spawn_worker_with(args).await;
    let first = order_placed("ord_lock_0", "cus_lock", "tok_lock_0", false);
    w.publish("order.placed", &first).await;
    w.wait_for_count("SELECT count(*) FROM customers WHERE id = 'cus_lock'", 1)
        .await;

    // Its own connection: the pool's would end an idle transaction after 30 s.
    let mut holder = sqlx::PgConnection::connect(&w.args.db.database_url)
        .await
        .expect("a connection of its own");
    let mut locked = holder.begin().await.expect("begin");
    sqlx::query("SELECT id FROM customers WHERE id = 'cus_lock' FOR UPDATE")
        .execute(&mut *locked)
        .await
        .expect("lock the customer's row");
    let held = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for i in 1..=5 {
        let msg = order_placed(
            &format!("ord_lock_{i}"),
            "cus_lock",
            &format!("tok_lock_{i}"),
            false,
        );
        w.publish("order.placed", &msg).await;
        ids.push(msg["id"].as_str().expect("id").to_owned());
    }

    let body = readiness_until(&w, 503, HELD_FOR).await;
    assert!(body.contains("stalled: a commit has waited"), "{body}");
    assert!(body.contains("last error: lock timeout"), "{body}");
    tokio::time::sleep_until(held + HELD_FOR).await;
    locked.commit().await.expect("release the lock");

    readiness_until(&w, 200, PATIENCE).await;
    let committed = format!(
        "SELECT count(*) FROM processed_messages WHERE message_id IN ('{}')",
        ids.join("','")
    );
    w.wait_for_count(&committed, ids.len() as i64).await;
    assert_eq!(
        w.count("SELECT count(*) FROM orders WHERE customer_id = 'cus_lock'")
            .await,
        6
    );
    assert_eq!(w.dead_letter_count().await, 0, "no dead letter");
    w.stop().await;
}

/// Polls `/readyz` until it answers `status` (within `within`); returns its body.
async fn readiness_until(w: &TestWorker, status: u16, within: Duration) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (got, body) = w.admin_get("/readyz", None).await;
        if got == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
