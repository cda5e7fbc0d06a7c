//! Expired cards (docs/messages.md, wallet rules): saved, but not available, not attachable, never the
//! default; and a card expires when the worker's clock passes the end of its month.

use super::*;
use chrono::{DateTime, TimeZone, Utc};
use std::sync::{Arc, Mutex};
use wallet_worker::domain::Clock;

#[tokio::test]
async fn an_expired_card_is_saved_but_not_listed_not_attachable_and_never_the_default() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let saved_event = send(&mut w, &card(&unique("ord"), &customer, "tok_x", 1, 2020)).await;
    let expired = source_of(&saved_event);
    assert_eq!(saved_event.data()["created"], true);
    assert_eq!(
        saved_event.data()["customer_payment_source"]["default"],
        false
    );
    assert_eq!(stored_default(&w, &customer).await, None);

    assert!(api_listing(&w, &customer, false).await.is_empty());
    let all = api_listing(&w, &customer, true).await;
    let shown_all = entry(&all, &expired);
    assert_eq!(shown_all["expired"], true);
    assert_eq!(shown_all["available"], false);
    assert_eq!(shown_all["default"], false);
    let cli = cli::list_json(&w, &customer).await;
    assert_eq!(entry(&cli, &expired)["expired"], true);
    assert_eq!(entry(&cli, &expired)["default"], false);

    assert_rejected(
        &attach(&mut w, &customer, &expired).await,
        "wallet.attach_rejected",
        "expired",
    );
    let refused = send(&mut w, &wallet_set_default(&customer, &expired)).await;
    assert_rejected(&refused, "wallet.default_rejected", "expired");

    // A valid card saved after it becomes the default, and set_default cannot undo it.
    let valid = saved(&mut w, &customer, "tok_v").await;
    assert_eq!(stored_default(&w, &customer).await, Some(valid.clone()));
    let refused = send(&mut w, &wallet_set_default(&customer, &expired)).await;
    assert_rejected(&refused, "wallet.default_rejected", "expired");
    assert_eq!(
        shown(&api_listing(&w, &customer, true).await),
        [(valid.clone(), true), (expired, false)]
    );
    assert_eq!(stored_default(&w, &customer).await, Some(valid));
    w.stop().await;
}

/// A clock the test moves; the worker reads it for every wallet rule.
fn settable_clock(start: DateTime<Utc>) -> (Arc<Mutex<DateTime<Utc>>>, Clock) {
    let now = Arc::new(Mutex::new(start));
    let read = now.clone();
    (now, Clock::from_fn(move || *read.lock().expect("clock")))
}

#[tokio::test]
async fn a_card_expires_when_the_clock_passes_the_end_of_its_expiry_month() {
    let (now, clock) = settable_clock(Utc::now());
    let mut args = test_args();
    args.clock = clock;
    let mut w = spawn_worker_with(args).await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    // Expires 12/2030 (the harness's card), saved first: the default.
    let december = saved(&mut w, &customer, "tok_dec").await;
    let later = source_of(
        &send(
            &mut w,
            &card(&unique("ord"), &customer, "tok_later", 1, 2032),
        )
        .await,
    );
    assert_eq!(stored_default(&w, &customer).await, Some(december.clone()));

    // The last second of December 2030 is still valid.
    *now.lock().unwrap() = Utc.with_ymd_and_hms(2030, 12, 31, 23, 59, 59).unwrap();
    let event = attach(&mut w, &customer, &december).await;
    assert_eq!(event.routing_key, "wallet.attached", "{:?}", event.body);

    *now.lock().unwrap() = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap();
    assert_rejected(
        &attach(&mut w, &customer, &december).await,
        "wallet.attach_rejected",
        "expired",
    );
    // The expired default gives way to the most recent available source.
    assert_eq!(
        shown(&api_listing(&w, &customer, false).await),
        [(later.clone(), true)]
    );
    let all = api_listing(&w, &customer, true).await;
    assert_eq!(entry(&all, &december)["expired"], true);
    assert_eq!(entry(&all, &december)["default"], false);
    let refused = send(&mut w, &wallet_set_default(&customer, &december)).await;
    assert_rejected(&refused, "wallet.default_rejected", "expired");
    // A valid card saved afterwards does not take the default: it moved when the card
    // expired.
    let third = send(
        &mut w,
        &card(&unique("ord"), &customer, "tok_third", 6, 2033),
    )
    .await;
    assert_eq!(third.data()["created"], true);
    assert_eq!(third.data()["customer_payment_source"]["default"], false);
    let listed = shown(&api_listing(&w, &customer, false).await);
    assert_eq!(listed.first(), Some(&(later.clone(), true)), "{listed:?}");
    assert_eq!(stored_default(&w, &customer).await, Some(later));
    w.stop().await;
}
