//! Panics are contained (docs/operations.md, failure handling): a delivery is settled whatever happens, a message
//! that panics the worker on every delivery ends as `poison_message` with its headers,
//! and a worker whose internal task died says so on `/readyz` and stops with an error.

use crate::helpers::*;
use crate::process::WorkerProcess;
use std::time::Duration;
use wallet_worker::broker::delivery::{POISON_DELIVERIES, POISON_PANICS};
use wallet_worker::faults;

#[tokio::test]
async fn a_message_that_panics_every_delivery_becomes_a_poison_dead_letter_while_others_flow() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let poison = order_placed("ord_poison", "cus_p", "tok_poison", true);
    let poison_id = poison["id"].as_str().unwrap().to_owned();
    faults::configure("delivery.panic", &format!("return({poison_id})"));
    w.publish("order.placed", &poison).await;
    let ids = publish_saves(&w, "flow", 10).await;

    let dead = w.next_dead_letter().await;
    let header = |name| {
        wallet_worker::broker::headers::text(&dead.properties, name)
            .unwrap_or_else(|| panic!("header {name}"))
    };
    assert_eq!(header("x-wallet-error"), "poison_message");
    assert!(header("x-wallet-error-detail").contains("panicked"));
    assert_eq!(header("x-wallet-original-routing-key"), "order.placed");
    assert!(!header("x-wallet-dead-lettered-at").is_empty());
    let attempts = wallet_worker::broker::headers::integer(&dead.properties, "x-wallet-attempts");
    assert_eq!(
        attempts,
        Some(i64::from(POISON_PANICS)),
        "bounded deliveries"
    );
    let event = w.dead_lettered_event(Some(&poison_id)).await;
    assert_eq!(event.data()["error"], "poison_message");

    for id in &ids {
        assert_eq!(w.event_caused_by(id).await.routing_key, "wallet.saved");
    }
    // Every delivery was settled: nothing is left in flight.
    let (_, metrics) = w.admin_get("/metrics", None).await;
    assert!(
        metrics.contains("wallet_deliveries_in_flight 0"),
        "{metrics}"
    );
    assert!(metrics.contains("wallet_panics_total{task=\"delivery\"}"));
    assert_eq!(
        w.count("SELECT count(*) FROM customer_payment_sources WHERE customer_id = 'cus_p'")
            .await,
        0
    );
    w.stop().await;
}

#[tokio::test]
async fn a_dead_committer_makes_the_worker_unready_and_stop_with_an_error() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    faults::configure("committer.panic", "panic");
    let msg = order_placed("ord_k", "cus_k", "tok_k", false);
    w.publish("order.placed", &msg).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = w.admin_get("/readyz", None).await;
        if status == 503 {
            assert!(body.contains("committer"), "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ended = w.stopped_by_itself().await;
    let error = ended.expect_err("the worker reports the dead task");
    assert!(error.to_string().contains("committer"), "{error}");
    faults::release("committer.panic");
    // The message was not acked: it was still in the queue for the next worker.
    let restarted = spawn_worker_with(w.args.clone()).await;
    restarted
        .wait_for_count("SELECT count(*) FROM orders WHERE id = 'ord_k'", 1)
        .await;
    restarted.stop().await;
}

#[tokio::test]
async fn a_worker_process_whose_committer_died_exits_non_zero() {
    let mut w = spawn_worker().await;
    w.pause_in_process_worker().await;
    let mut process =
        WorkerProcess::start_with_env(&w.args, &[("FAILPOINTS", "committer.panic=panic")]);
    w.publish(
        "order.placed",
        &order_placed("ord_x", "cus_x", "tok_x", false),
    )
    .await;
    let status = process.exited_within(PATIENCE).await;
    assert!(!status.success(), "{status}");
    w.stop().await;
}

#[tokio::test]
async fn a_message_that_crashes_every_worker_becomes_a_poison_dead_letter_before_the_broker_limit()
{
    let mut w = spawn_worker().await;
    w.pause_in_process_worker().await;
    let poison = order_placed("ord_crash", "cus_c", "tok_crash", false);
    let id = poison["id"].as_str().unwrap().to_owned();
    w.publish("order.placed", &poison).await;
    let failpoint = format!("delivery.crash=return({id})");
    // Each worker takes the message and dies with it; the broker counts the deliveries.
    let mut crashes: i64 = 0;
    while w.dead_letter_count().await == 0 {
        let mut process = WorkerProcess::start_with_env(&w.args, &[("FAILPOINTS", &failpoint)]);
        tokio::select! {
            status = process.exited_within(PATIENCE) => {
                assert!(!status.success());
                crashes += 1;
            }
            () = w.wait_for_dead_letters(1) => {
                let _ = process.terminate().await;
            }
        }
        assert!(
            crashes <= POISON_DELIVERIES,
            "{crashes} crashes and still not dead-lettered"
        );
    }
    assert_eq!(crashes, POISON_DELIVERIES);
    let dead = w.next_dead_letter().await;
    assert_eq!(
        wallet_worker::broker::headers::text(&dead.properties, "x-wallet-error").as_deref(),
        Some("poison_message")
    );
    w.stop().await;
}

#[tokio::test]
async fn a_panic_is_a_failed_attempt_and_attempts_running_out_dead_letter_it_as_internal_error() {
    let mut args = test_args();
    // Fewer attempts than panics that make poison: the attempts run out first.
    args.max_attempts = POISON_PANICS - 1;
    let mut w = spawn_worker_with(args).await;
    let msg = wallet_save("ord_panicky");
    let id = msg["id"].as_str().unwrap().to_owned();
    faults::configure("delivery.panic", &format!("return({id})"));
    w.publish("wallet.save", &msg).await;
    let event = w.dead_lettered_event(Some(&id)).await;
    let data = event.data();
    assert_eq!(data["error"], "internal_error");
    assert!(
        data["detail"].as_str().unwrap().contains("panicked"),
        "{data}"
    );
    assert_eq!(data["attempts"], POISON_PANICS - 1);
    assert_eq!(data["order_id"], "ord_panicky");
    let dead = w.next_dead_letter().await;
    assert_eq!(
        wallet_worker::broker::headers::text(&dead.properties, "x-wallet-error").as_deref(),
        Some("internal_error")
    );
    w.stop().await;
}
