//! The wallet's whole life (docs/messages.md, wallet rules): removal, the default, the cap and disabled
//! gateways, as a pipeline sees them in events and an operator sees them in the read
//! API. Expiry, races and the command line have their own files below.

mod cli;
mod expiry;
mod races;

use crate::helpers::*;
use serde_json::{Value, json};
use wallet_worker::domain::Secret;

// ---- messages and what the user sees ----

fn wallet_remove(customer_id: &str, source_id: &str) -> Value {
    envelope(
        "wallet.remove",
        json!({ "customer_id": customer_id, "customer_payment_source_id": source_id }),
    )
}

fn wallet_set_default(customer_id: &str, source_id: &str) -> Value {
    envelope(
        "wallet.set_default",
        json!({ "customer_id": customer_id, "customer_payment_source_id": source_id }),
    )
}

/// An `order.placed` that saves a card expiring `month`/`year`.
fn card(order_id: &str, customer_id: &str, token: &str, month: u32, year: u32) -> Value {
    let mut msg = order_placed(order_id, customer_id, token, true);
    let metadata = &mut msg["data"]["order"]["payment_source"]["metadata"];
    metadata["exp_month"] = json!(month);
    metadata["exp_year"] = json!(year);
    msg
}

/// The same message, paying at another gateway.
fn at_gateway(mut msg: Value, gateway_id: &str) -> Value {
    msg["data"]["order"]["payment_source"]["gateway_id"] = json!(gateway_id);
    msg
}

fn message_id(msg: &Value) -> &str {
    msg["id"].as_str().expect("message id")
}

/// Publishes `msg` on its own routing key and returns the event it caused.
async fn send(w: &mut TestWorker, msg: &Value) -> Event {
    let routing_key = msg["type"].as_str().expect("type").to_owned();
    w.publish(&routing_key, msg).await;
    w.event_caused_by(message_id(msg)).await
}

/// Saves a card of `customer` (valid until 12/2030) and returns the new source id.
async fn saved(w: &mut TestWorker, customer: &str, token: &str) -> String {
    let event = send(w, &order_placed(&unique("ord"), customer, token, true)).await;
    source_of(&event)
}

/// The id of the source a `wallet.saved` event reports.
fn source_of(event: &Event) -> String {
    assert_eq!(event.routing_key, "wallet.saved", "{:?}", event.body);
    event.data()["customer_payment_source"]["id"]
        .as_str()
        .expect("source id")
        .to_owned()
}

/// Attaches `source` to a new pending order of `customer`; returns the event.
async fn attach(w: &mut TestWorker, customer: &str, source: &str) -> Event {
    send(
        w,
        &wallet_attach(&unique("ord"), "pending", customer, source),
    )
    .await
}

fn assert_rejected(event: &Event, routing_key: &str, reason: &str) {
    assert_eq!(event.routing_key, routing_key, "{:?}", event.body);
    assert_eq!(event.data()["reason"], reason, "{:?}", event.body);
}

/// The read API's sources of `customer` (`?all=true` with `all`).
async fn api_listing(w: &TestWorker, customer: &str, all: bool) -> Vec<Value> {
    let query = if all { "?all=true" } else { "" };
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = w
        .admin_get(
            &format!("/v1/customers/{customer}/customer_payment_sources{query}"),
            Some(&bearer),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("JSON:API document");
    doc["data"].as_array().expect("data").clone()
}

/// `(id, default)` of each listed source, in listing order.
fn shown(listing: &[Value]) -> Vec<(String, bool)> {
    listing
        .iter()
        .map(|s| {
            let attributes = s.get("attributes").unwrap_or(s);
            let default = attributes["default"].as_bool().expect("default");
            (s["id"].as_str().expect("id").to_owned(), default)
        })
        .collect()
}

/// The listing's attributes of source `id` (read API or CLI JSON).
fn entry<'a>(listing: &'a [Value], id: &str) -> &'a Value {
    let source = listing
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed: {listing:?}"));
    source.get("attributes").unwrap_or(source)
}

/// The default the store records for `customer`, checking there is at most one.
async fn stored_default(w: &TestWorker, customer: &str) -> Option<String> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT source_id FROM wallet_defaults WHERE customer_id = $1")
            .bind(customer)
            .fetch_all(&w.pool)
            .await
            .expect("wallet_defaults");
    assert!(rows.len() <= 1, "one default at most: {rows:?}");
    rows.into_iter().next()
}

async fn stored_sources(w: &TestWorker, customer: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM customer_payment_sources WHERE customer_id = $1")
        .bind(customer)
        .fetch_all(&w.pool)
        .await
        .expect("customer_payment_sources")
}

/// Registers (or changes) gateway `id` at the test stub, enabled or not.
async fn set_gateway(w: &TestWorker, id: &str, enabled: bool) {
    let url = format!("{}/token", w.gateway.uri());
    wallet_worker::store::gateways::upsert(
        &w.pool,
        &w.keys,
        id,
        &url,
        &Secret::new(GATEWAY_SECRET),
        enabled,
    )
    .await
    .expect("gateway");
}

// ---- removal ----

#[tokio::test]
async fn removing_a_source_publishes_wallet_removed_and_the_source_is_gone_everywhere() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let kept = saved(&mut w, &customer, "tok_kept").await;
    let gone = saved(&mut w, &customer, "tok_gone").await;

    let msg = wallet_remove(&customer, &gone);
    let removed = send(&mut w, &msg).await;
    assert_eq!(removed.routing_key, "wallet.removed");
    assert_eq!(removed.body["correlation_id"], msg["correlation_id"]);
    assert_eq!(
        removed.data(),
        &json!({ "customer_id": customer, "customer_payment_source_id": gone,
                 "default_customer_payment_source_id": kept })
    );

    assert_eq!(
        shown(&api_listing(&w, &customer, true).await),
        [(kept.clone(), true)]
    );
    let cli = cli::list_json(&w, &customer).await;
    assert_eq!(shown(&cli), [(kept.clone(), true)]);
    assert_rejected(
        &attach(&mut w, &customer, &gone).await,
        "wallet.attach_rejected",
        "not_found",
    );
    let card = w.keys.fingerprint(
        GATEWAY_ID,
        &wallet_worker::domain::Secret::new(source_token_for("tok_gone")),
    );
    let tokens: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customer_payment_sources WHERE id = $1 OR fingerprint = $2",
    )
    .bind(&gone)
    .bind(card.0.as_slice())
    .fetch_one(&w.pool)
    .await
    .unwrap();
    assert_eq!(tokens, 0, "the row and its tokens are deleted");

    // The same card saved again later is a new source.
    let again = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_gone", true),
    )
    .await;
    assert_eq!(again.data()["created"], true);
    let renewed = source_of(&again);
    assert_ne!(renewed, gone);
    assert_eq!(again.data()["customer_payment_source"]["default"], false);
    w.stop().await;
}

#[tokio::test]
async fn removing_another_customers_source_or_an_unknown_id_is_not_found_and_changes_nothing() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let owner = unique("cus_owner");
    let thief = unique("cus_thief");
    let source = saved(&mut w, &owner, "tok_owned").await;
    saved(&mut w, &thief, "tok_thief").await;
    for (customer, target) in [(&thief, source.as_str()), (&owner, "NoSuchOne1")] {
        let event = send(&mut w, &wallet_remove(customer, target)).await;
        assert_rejected(&event, "wallet.remove_rejected", "not_found");
        assert_eq!(event.data()["customer_id"], customer.as_str());
        assert_eq!(event.data()["customer_payment_source_id"], target);
    }
    assert_eq!(
        stored_sources(&w, &owner).await,
        std::slice::from_ref(&source)
    );
    assert_eq!(stored_default(&w, &owner).await, Some(source.clone()));
    assert_eq!(
        shown(&api_listing(&w, &owner, true).await),
        [(source, true)]
    );
    w.stop().await;
}

// ---- the default ----

#[tokio::test]
async fn the_first_saved_source_is_the_default_until_set_default_moves_another_first() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let first = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_1", true),
    )
    .await;
    assert_eq!(first.data()["customer_payment_source"]["default"], true);
    let second = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_2", true),
    )
    .await;
    assert_eq!(second.data()["customer_payment_source"]["default"], false);
    let (a, b) = (source_of(&first), source_of(&second));
    assert_eq!(
        shown(&api_listing(&w, &customer, false).await),
        [(a.clone(), true), (b.clone(), false)]
    );

    let msg = wallet_set_default(&customer, &b);
    let set = send(&mut w, &msg).await;
    assert_eq!(set.routing_key, "wallet.default_set");
    assert_eq!(
        set.data(),
        &json!({ "customer_id": customer, "customer_payment_source_id": b })
    );
    let expected = [(b.clone(), true), (a.clone(), false)];
    assert_eq!(shown(&api_listing(&w, &customer, false).await), expected);
    assert_eq!(shown(&cli::list_json(&w, &customer).await), expected);
    assert_eq!(stored_default(&w, &customer).await, Some(b.clone()));

    // A third card does not take the default away from the chosen one.
    let third = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_3", true),
    )
    .await;
    assert_eq!(third.data()["customer_payment_source"]["default"], false);
    assert_eq!(stored_default(&w, &customer).await, Some(b));
    w.stop().await;
}

#[tokio::test]
async fn set_default_of_another_customers_source_or_an_unknown_id_is_default_rejected_not_found() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let owner = unique("cus_owner");
    let other = unique("cus_other");
    let source = saved(&mut w, &owner, "tok_o").await;
    let own = saved(&mut w, &other, "tok_x").await;
    for (customer, target) in [(&other, source.as_str()), (&other, "NoSuchOne1")] {
        let event = send(&mut w, &wallet_set_default(customer, target)).await;
        assert_rejected(&event, "wallet.default_rejected", "not_found");
        assert_eq!(event.data()["customer_id"], customer.as_str());
        assert_eq!(event.data()["customer_payment_source_id"], target);
    }
    assert_eq!(stored_default(&w, &other).await, Some(own));
    assert_eq!(stored_default(&w, &owner).await, Some(source));
    w.stop().await;
}

#[tokio::test]
async fn removing_the_default_promotes_the_most_recently_saved_remaining_available_source() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    let b = saved(&mut w, &customer, "tok_b").await;
    let c = saved(&mut w, &customer, "tok_c").await;
    // Saved last, but expired: never the default.
    let expired =
        source_of(&send(&mut w, &card(&unique("ord"), &customer, "tok_x", 1, 2020)).await);
    assert_eq!(
        send(&mut w, &wallet_set_default(&customer, &b))
            .await
            .routing_key,
        "wallet.default_set"
    );

    for (removed, next) in [(&b, Some(&c)), (&c, Some(&a)), (&a, None)] {
        let event = send(&mut w, &wallet_remove(&customer, removed)).await;
        assert_eq!(event.routing_key, "wallet.removed");
        assert_eq!(
            event.data()["default_customer_payment_source_id"],
            json!(next),
            "after removing {removed}"
        );
        assert_eq!(stored_default(&w, &customer).await.as_ref(), next);
        let listed = shown(&api_listing(&w, &customer, false).await);
        assert_eq!(
            listed.first().map(|(id, default)| (id, *default)),
            next.map(|id| (id, true))
        );
    }
    assert_eq!(
        shown(&api_listing(&w, &customer, true).await),
        [(expired, false)],
        "an expired source is never the default"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_default_whose_gateway_is_disabled_is_replaced_in_listings_by_the_most_recent_available()
{
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    set_gateway(&w, "other-pay", true).await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    let b = source_of(
        &send(
            &mut w,
            &at_gateway(
                order_placed(&unique("ord"), &customer, "tok_b", true),
                "other-pay",
            ),
        )
        .await,
    );
    let c = saved(&mut w, &customer, "tok_c").await;
    assert_eq!(stored_default(&w, &customer).await, Some(a.clone()));

    set_gateway(&w, GATEWAY_ID, false).await;
    assert_eq!(
        shown(&api_listing(&w, &customer, false).await),
        [(b.clone(), true)]
    );
    let all = api_listing(&w, &customer, true).await;
    assert_eq!(
        shown(&all),
        [(b.clone(), true), (c.clone(), false), (a.clone(), false)]
    );
    for id in [&a, &c] {
        assert_eq!(entry(&all, id)["available"], false);
        assert_eq!(entry(&all, id)["expired"], false);
    }
    assert_eq!(shown(&cli::list_json(&w, &customer).await), shown(&all));

    // A card saved afterwards does not take the default: it moved when the gateway went.
    let d = send(
        &mut w,
        &at_gateway(
            order_placed(&unique("ord"), &customer, "tok_d", true),
            "other-pay",
        ),
    )
    .await;
    assert_eq!(d.data()["customer_payment_source"]["default"], false);
    let listed = shown(&api_listing(&w, &customer, false).await);
    assert_eq!(listed.first(), Some(&(b.clone(), true)), "{listed:?}");
    assert_eq!(stored_default(&w, &customer).await, Some(b));
    w.stop().await;
}

// ---- the cap ----

#[tokio::test]
async fn at_the_cap_a_new_card_is_wallet_full_but_a_card_already_held_is_saved_again() {
    let mut args = test_args();
    args.max_sources_per_customer = 2;
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    saved(&mut w, &customer, "tok_b").await;

    let order = unique("ord");
    let full = send(&mut w, &order_placed(&order, &customer, "tok_c", true)).await;
    assert_rejected(&full, "wallet.save_failed", "wallet_full");
    assert_eq!(full.data()["order_id"], order.as_str());
    assert_eq!(full.data()["customer_id"], customer.as_str());
    assert!(
        full.data()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );

    let again = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_a", true),
    )
    .await;
    assert_eq!(source_of(&again), a);
    assert_eq!(again.data()["created"], false);
    assert_eq!(again.data()["customer_payment_source"]["default"], true);
    assert_eq!(stored_sources(&w, &customer).await.len(), 2);
    w.stop().await;
}

#[tokio::test]
async fn expired_sources_do_not_count_toward_the_cap() {
    let mut args = test_args();
    args.max_sources_per_customer = 2;
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    for token in ["tok_old1", "tok_old2"] {
        let event = send(&mut w, &card(&unique("ord"), &customer, token, 1, 2020)).await;
        assert_eq!(event.data()["created"], true);
    }
    for token in ["tok_a", "tok_b"] {
        let event = send(
            &mut w,
            &order_placed(&unique("ord"), &customer, token, true),
        )
        .await;
        assert_eq!(event.routing_key, "wallet.saved", "{:?}", event.body);
        assert_eq!(event.data()["created"], true);
    }
    let full = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_c", true),
    )
    .await;
    assert_rejected(&full, "wallet.save_failed", "wallet_full");
    assert_eq!(stored_sources(&w, &customer).await.len(), 4);
    w.stop().await;
}

// ---- disabled gateways ----

#[tokio::test]
async fn a_save_at_a_disabled_gateway_is_gateway_disabled_without_calling_it() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    // Before the worker has read the gateway at all, so no cached copy is involved.
    set_gateway(&w, GATEWAY_ID, false).await;
    let order = unique("ord");
    let customer = unique("cus");
    let event = send(&mut w, &order_placed(&order, &customer, "tok_d", true)).await;
    assert_rejected(&event, "wallet.save_failed", "gateway_disabled");
    assert_eq!(event.data()["order_id"], order.as_str());
    assert_eq!(
        w.gateway_requests().await.len(),
        0,
        "no call to the gateway"
    );
    assert!(stored_sources(&w, &customer).await.is_empty());
    w.stop().await;
}

#[tokio::test]
async fn sources_of_a_disabled_gateway_are_unavailable_and_attaching_one_is_gateway_disabled() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let source = saved(&mut w, &customer, "tok_s").await;
    set_gateway(&w, GATEWAY_ID, false).await;

    assert!(api_listing(&w, &customer, false).await.is_empty());
    let all = api_listing(&w, &customer, true).await;
    assert_eq!(shown(&all), [(source.clone(), false)]);
    assert_eq!(entry(&all, &source)["available"], false);
    let cli = cli::list_json(&w, &customer).await;
    assert_eq!(entry(&cli, &source)["available"], false);
    assert_rejected(
        &attach(&mut w, &customer, &source).await,
        "wallet.attach_rejected",
        "gateway_disabled",
    );
    // Whether or not this worker still had the gateway cached as enabled, the commit
    // decides: the save is refused.
    let event = send(
        &mut w,
        &order_placed(&unique("ord"), &customer, "tok_t", true),
    )
    .await;
    assert_rejected(&event, "wallet.save_failed", "gateway_disabled");
    assert_eq!(stored_sources(&w, &customer).await, [source]);
    w.stop().await;
}

// ---- the read API ----

#[tokio::test]
async fn the_read_api_shows_default_and_expired_and_all_adds_the_unavailable_sources() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let valid = saved(&mut w, &customer, "tok_v").await;
    let expired =
        source_of(&send(&mut w, &card(&unique("ord"), &customer, "tok_x", 1, 2020)).await);

    let available = api_listing(&w, &customer, false).await;
    assert_eq!(shown(&available), [(valid.clone(), true)]);
    assert_eq!(available[0]["type"], "customer_payment_sources");
    assert_eq!(entry(&available, &valid)["expired"], false);

    let all = api_listing(&w, &customer, true).await;
    assert_eq!(shown(&all), [(valid, true), (expired.clone(), false)]);
    assert_eq!(entry(&all, &expired)["expired"], true);
    let body = serde_json::to_string(&all).unwrap();
    for secret in ["tok_v", "tok_x", "cus_tok_", "pst_"] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
    w.stop().await;
}
