//! Changes of one wallet published together (docs/messages.md, wallet rules, "decisions hold at commit"):
//! whichever commits first, the events agree with each other and with the store.

use super::*;
use futures::future::join_all;

/// Publishes every message at once (confirms pipelined on one channel), then returns
/// the event each caused, in the order of `msgs`.
async fn race(w: &mut TestWorker, msgs: &[Value]) -> Vec<Event> {
    let publishes = msgs
        .iter()
        .map(|msg| w.publish(msg["type"].as_str().expect("type"), msg));
    join_all(publishes).await;
    let mut events = Vec::with_capacity(msgs.len());
    for msg in msgs {
        events.push(w.event_caused_by(message_id(msg)).await);
    }
    events
}

/// The source an order records it pays with (`None`: no such order or no source).
async fn attached_source(w: &TestWorker, order_id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT customer_payment_source_id FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&w.pool)
        .await
        .expect("orders")
        .flatten()
}

#[tokio::test]
async fn an_attach_racing_a_remove_of_the_same_source_never_attaches_a_removed_source() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let pairs = 20;
    let customers: Vec<String> = (0..pairs).map(|_| unique("cus")).collect();
    let saves: Vec<Value> = customers
        .iter()
        .enumerate()
        .map(|(i, c)| order_placed(&unique("ord"), c, &format!("tok_race_{i}"), true))
        .collect();
    let sources: Vec<String> = race(&mut w, &saves).await.iter().map(source_of).collect();

    let orders: Vec<String> = (0..pairs).map(|_| unique("ord")).collect();
    let (mut msgs, mut pair_of) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let attach = wallet_attach(&orders[i], "pending", &customers[i], &sources[i]);
        let remove = wallet_remove(&customers[i], &sources[i]);
        // Alternate which of the two reaches the queue first.
        if i % 2 == 0 {
            msgs.extend([attach, remove]);
        } else {
            msgs.extend([remove, attach]);
        }
        pair_of.extend([i, i]);
    }
    let events = race(&mut w, &msgs).await;

    let mut attached = 0;
    for ((msg, event), &i) in msgs.iter().zip(&events).zip(&pair_of) {
        let (customer, source) = (&customers[i], &sources[i]);
        if msg["type"] == "wallet.remove" {
            // The source existed whichever came first: the removal always happens.
            assert_eq!(event.routing_key, "wallet.removed", "{:?}", event.body);
            assert_eq!(
                event.data()["default_customer_payment_source_id"],
                Value::Null
            );
            continue;
        }
        match event.routing_key.as_str() {
            "wallet.attached" => {
                attached += 1;
                let ps = &event.data()["payment_source"];
                assert_eq!(ps["customer_token"], customer_token_for(customer).as_str());
                assert_eq!(
                    ps["payment_source_token"],
                    source_token_for(&format!("tok_race_{i}")).as_str()
                );
                assert_eq!(
                    attached_source(&w, &orders[i]).await.as_ref(),
                    Some(source),
                    "an attached event has its attachment stored"
                );
            }
            "wallet.attach_rejected" => {
                assert_eq!(event.data()["reason"], "not_found", "{:?}", event.body);
                assert_eq!(attached_source(&w, &orders[i]).await, None);
            }
            other => panic!("unexpected {other}: {:?}", event.body),
        }
    }
    for customer in &customers {
        assert!(stored_sources(&w, customer).await.is_empty());
        assert_eq!(stored_default(&w, customer).await, None);
    }
    eprintln!("{attached} of {pairs} attaches committed before their removal");
    w.stop().await;
}

#[tokio::test]
async fn two_set_defaults_at_once_leave_exactly_one_default_that_the_listing_agrees_with() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    let b = saved(&mut w, &customer, "tok_b").await;
    for round in 0..20 {
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let msgs = [
            wallet_set_default(&customer, first),
            wallet_set_default(&customer, second),
        ];
        for event in race(&mut w, &msgs).await {
            assert_eq!(event.routing_key, "wallet.default_set", "{:?}", event.body);
        }
        let count = w
            .count(&format!(
                "SELECT count(*) FROM wallet_defaults WHERE customer_id = '{customer}'"
            ))
            .await;
        assert_eq!(count, 1, "round {round}");
        let stored = stored_default(&w, &customer).await.expect("a default");
        assert!(stored == a || stored == b);
        let listed = shown(&api_listing(&w, &customer, false).await);
        let defaults: Vec<_> = listed.iter().filter(|(_, d)| *d).collect();
        assert_eq!(defaults, [&(stored.clone(), true)], "round {round}");
        assert_eq!(listed[0], (stored, true), "the default is listed first");
    }
    w.stop().await;
}

#[tokio::test]
async fn two_new_cards_racing_at_the_cap_save_exactly_one() {
    let mut args = test_args();
    args.max_sources_per_customer = 1;
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let customers: Vec<String> = (0..10).map(|_| unique("cus")).collect();
    let msgs: Vec<Value> = customers
        .iter()
        .flat_map(|c| {
            [
                order_placed(&unique("ord"), c, &unique("tok"), true),
                order_placed(&unique("ord"), c, &unique("tok"), true),
            ]
        })
        .collect();
    let events = race(&mut w, &msgs).await;
    for (customer, pair) in customers.iter().zip(events.chunks(2)) {
        let saved: Vec<_> = pair
            .iter()
            .filter(|e| e.routing_key == "wallet.saved")
            .collect();
        let full: Vec<_> = pair
            .iter()
            .filter(|e| {
                e.routing_key == "wallet.save_failed" && e.data()["reason"] == "wallet_full"
            })
            .collect();
        assert_eq!((saved.len(), full.len()), (1, 1), "{pair:?}");
        assert_eq!(saved[0].data()["created"], true);
        assert_eq!(saved[0].data()["customer_payment_source"]["default"], true);
        let id = source_of(saved[0]);
        assert_eq!(
            stored_sources(&w, customer).await,
            std::slice::from_ref(&id)
        );
        assert_eq!(stored_default(&w, customer).await, Some(id));
    }
    w.stop().await;
}

#[tokio::test]
async fn removing_the_default_while_a_save_commits_leaves_one_default_the_events_agree_with() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customers: Vec<String> = (0..10).map(|_| unique("cus")).collect();
    let first: Vec<Value> = customers
        .iter()
        .map(|c| order_placed(&unique("ord"), c, "tok_first", true))
        .collect();
    let defaults: Vec<String> = race(&mut w, &first).await.iter().map(source_of).collect();

    let msgs: Vec<Value> = customers
        .iter()
        .zip(&defaults)
        .flat_map(|(c, a)| {
            [
                wallet_remove(c, a),
                order_placed(&unique("ord"), c, "tok_second", true),
            ]
        })
        .collect();
    let events = race(&mut w, &msgs).await;
    let mut removal_first = 0;
    for (customer, pair) in customers.iter().zip(events.chunks(2)) {
        let (removed, saved) = (&pair[0], &pair[1]);
        assert_eq!(removed.routing_key, "wallet.removed", "{:?}", removed.body);
        let b = source_of(saved);
        let promoted = removed.data()["default_customer_payment_source_id"].clone();
        let saved_default = saved.data()["customer_payment_source"]["default"].clone();
        // Removal first: no default left, then the save is the first again. Save first:
        // not the default, then the removal promotes it.
        match (promoted.as_str(), saved_default.as_bool()) {
            (None, Some(true)) => removal_first += 1,
            (Some(id), Some(false)) if id == b => {}
            other => panic!(
                "events disagree: removed.default {promoted}, saved.default {saved_default} ({other:?})"
            ),
        }
        assert_eq!(stored_default(&w, customer).await, Some(b.clone()));
        assert_eq!(shown(&api_listing(&w, customer, true).await), [(b, true)]);
    }
    eprintln!(
        "{removal_first} of {} removals committed before the save",
        customers.len()
    );
    w.stop().await;
}
