//! The transactional outbox: events follow their state, even across a crash.

use crate::helpers::*;

#[tokio::test]
async fn an_outbox_row_left_unpublished_by_a_crash_is_published_after_restart() {
    let args = test_args();
    let _cleanup = Cleanup::of_worker(&args);
    // The state a crash leaves behind: committed, never published.
    let pool =
        wallet_worker::store::connect_and_migrate(&args.db.database_url, 2, args.keys.as_ref())
            .await
            .unwrap();
    let body = serde_json::json!({
        "id": "evt-left-behind", "type": "wallet.saved", "occurred_at": "2026-11-27T16:00:00Z",
        "causation_id": "msg-before-crash",
        "data": { "order_id": "ord_x", "customer_id": "cus_x", "created": true,
                  "customer_payment_source": { "id": "AbCdEfGh12", "gateway_id": "acme-pay", "name": "n", "metadata": {}, "default": true } } });
    leave_outbox_row(&pool, "evt-left-behind", "wallet.saved", &body, None).await;
    pool.close().await;

    let mut w = spawn_worker_with(args).await;
    let event = w.next_event().await;
    assert_eq!(event.body["id"], "evt-left-behind");
    assert_eq!(
        event.properties.message_id().as_ref().unwrap().as_str(),
        "evt-left-behind"
    );
    // The row is deleted in the relay's transaction right after the broker's confirm.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.count("SELECT count(*) FROM outbox").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox row never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    w.stop().await;
}

#[tokio::test]
async fn every_event_leaves_the_outbox_once_the_broker_confirmed_it() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    for i in 0..20 {
        w.publish(
            "order.placed",
            &order_placed(&format!("ord_o{i}"), "cus_o", &format!("tok_o{i}"), true),
        )
        .await;
    }
    for _ in 0..20 {
        assert_eq!(w.next_event().await.routing_key, "wallet.saved");
    }
    // The relay deletes after the confirm; the backlog drains to zero.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while w.count("SELECT count(*) FROM outbox").await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never drained"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(w.count("SELECT count(*) FROM processed_messages").await, 20);
    w.stop().await;
}
