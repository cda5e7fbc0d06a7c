//! Retention (docs/operations.md, storage retention): the pruner forgets processed
//! message ids past the dedupe window, orders untouched past theirs and dead letters
//! kept past theirs, and nothing younger; a redelivery after the window is treated as new.

use crate::helpers::*;

#[tokio::test]
async fn the_pruner_removes_only_what_is_past_each_window() {
    let mut args = test_args();
    args.retention_interval_ms = 50;
    let w = spawn_worker_with(args).await;
    let mut ids = Vec::new();
    for i in 1..=4 {
        let message = order_placed(&format!("ord_r{i}"), "cus_r", &unique("tok"), false);
        ids.push(message["id"].as_str().unwrap().to_owned());
        w.publish("order.placed", &message).await;
    }
    w.wait_for_count("SELECT count(*) FROM orders WHERE id LIKE 'ord_r%'", 4)
        .await;
    w.wait_for_count("SELECT count(*) FROM processed_messages", 4)
        .await;
    // Ages: just past and just within each window (30 and 90 days by default).
    let age = async |sql: &str| {
        sqlx::query(sql).execute(&w.pool).await.unwrap();
    };
    age(&format!(
        "UPDATE processed_messages SET processed_at = now() - interval '30 days 1 hour' WHERE message_id = '{}'",
        ids[0]
    ))
    .await;
    age(&format!(
        "UPDATE processed_messages SET processed_at = now() - interval '29 days 23 hours' WHERE message_id = '{}'",
        ids[1]
    ))
    .await;
    age("UPDATE orders SET updated_at = now() - interval '90 days 1 hour' WHERE id = 'ord_r1'")
        .await;
    age("UPDATE orders SET updated_at = now() - interval '89 days 23 hours' WHERE id = 'ord_r2'")
        .await;

    w.wait_for_count("SELECT count(*) FROM processed_messages", 3)
        .await;
    w.wait_for_count("SELECT count(*) FROM orders", 3).await;
    let kept = |table: &str, column: &str, id: &str| {
        format!("SELECT count(*) FROM {table} WHERE {column} = '{id}'")
    };
    assert_eq!(
        w.count(&kept("processed_messages", "message_id", &ids[0]))
            .await,
        0
    );
    for id in &ids[1..] {
        assert_eq!(
            w.count(&kept("processed_messages", "message_id", id)).await,
            1
        );
    }
    assert_eq!(w.count(&kept("orders", "id", "ord_r1")).await, 0);
    for id in ["ord_r2", "ord_r3", "ord_r4"] {
        assert_eq!(w.count(&kept("orders", "id", id)).await, 1);
    }

    // Past the window, the same message id has its effect again.
    let again = order_placed("ord_r1", "cus_r", &unique("tok"), false);
    let mut again = again;
    again["id"] = serde_json::json!(ids[0]);
    w.publish("order.placed", &again).await;
    w.wait_for_count(&kept("orders", "id", "ord_r1"), 1).await;
    w.wait_for_count(&kept("processed_messages", "message_id", &ids[0]), 1)
        .await;
    w.stop().await;
}

#[tokio::test]
async fn pruning_in_batches_from_several_workers_deletes_each_old_row_once() {
    let w = spawn_worker().await;
    let settings = wallet_worker::store::retention::RetentionSettings {
        pause: std::time::Duration::ZERO,
        ..wallet_worker::store::retention::RetentionSettings::from_days(
            30,
            90,
            std::time::Duration::from_secs(60),
        )
    };
    // 2,500 old inbox rows (2.5 batches) and 100 recent ones, made by the worker's own
    // inbox insert path being bypassed: copy a processed row with new ids and ages.
    let message = order_placed("ord_b", "cus_b", &unique("tok"), false);
    w.publish("order.placed", &message).await;
    w.wait_for_count("SELECT count(*) FROM processed_messages", 1)
        .await;
    sqlx::query(
        "INSERT INTO processed_messages
         SELECT (jsonb_populate_record(p, jsonb_build_object(
                    'message_id', 'old-' || i,
                    'processed_at', now() - interval '40 days' + i * interval '1 second'))).*
         FROM processed_messages p, generate_series(1, 2500) i
         UNION ALL
         SELECT (jsonb_populate_record(p, jsonb_build_object(
                    'message_id', 'new-' || i, 'processed_at', now()))).*
         FROM processed_messages p, generate_series(1, 100) i",
    )
    .execute(&w.pool)
    .await
    .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let (a, b) = tokio::join!(
        wallet_worker::store::retention::prune(&w.pool, &settings, &stop),
        wallet_worker::store::retention::prune(&w.pool, &settings, &stop),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.inbox + b.inbox, 2500, "{a:?} {b:?}");
    assert_eq!(
        w.count("SELECT count(*) FROM processed_messages").await,
        101
    );
    w.stop().await;
}

#[tokio::test]
async fn dead_letters_kept_past_their_window_are_pruned_and_leave_their_groups() {
    let mut args = test_args();
    args.retention_interval_ms = 50;
    args.dead_letter_retention_days = 10;
    let w = spawn_worker_with(args).await;
    crate::dlq::fill(&w, 6).await;
    // A replayed one stays as history until it is as old: d-02 is replayed, and dies
    // again (its order never comes) as a new dead letter.
    let replay = crate::dlq::dlq_cli(&w, &["replay", "--id", "d-02"]).await;
    assert!(replay.success, "{}", replay.stderr);
    w.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE message_id = 'd-02' AND replayed_at IS NULL",
        1,
    )
    .await;
    // Kept in the store just past and just within the window (10 days here).
    sqlx::query(
        "UPDATE dead_letters SET ingested_at = now() - interval '10 days 1 hour'
         WHERE message_id IN ('d-00', 'd-03') OR (message_id = 'd-02' AND replayed_at IS NOT NULL)",
    )
    .execute(&w.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE dead_letters SET ingested_at = now() - interval '9 days 23 hours'
         WHERE message_id = 'd-01'",
    )
    .execute(&w.pool)
    .await
    .unwrap();

    w.wait_for_count("SELECT count(*) FROM dead_letters", 4)
        .await;
    let left: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM dead_letters ORDER BY message_id")
            .fetch_all(&w.pool)
            .await
            .unwrap();
    assert_eq!(left, ["d-01", "d-02", "d-04", "d-05"]);
    let (groups, waiting): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(count)::bigint FROM dead_letter_groups")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(
        (groups, waiting),
        (4, 4),
        "the pruned ones left their groups"
    );
    w.stop().await;
}
