//! Every bound of `limits.rs` (docs/operations.md, failure handling): a value at the bound is accepted and one
//! past it is refused with a rejection that names the field and the limit. Each test
//! fails if its guard is removed, because the refused input is otherwise valid.

use super::*;
use crate::domain::fixtures::{
    order_placed, parse_bytes, parse_value, rejection, wallet_attach, wallet_save, with,
};
use serde_json::{Map, Value, json};

/// `path` of `message` accepts `max` bytes and refuses `max + 1`, naming `max`.
fn bounded(message: &Value, path: &str, max: usize) {
    let at_limit = with(message, path, json!("x".repeat(max)));
    if let Err(rejection) = parse_value(&at_limit) {
        panic!("{path} at {max} bytes refused: {rejection}");
    }
    let over = rejection(&with(message, path, json!("x".repeat(max + 1))));
    assert_eq!(over.field, path);
    assert!(over.reason.contains(&max.to_string()), "{path}: {over}");
}

#[test]
fn every_id_is_bounded_by_the_id_limit() {
    for path in [
        "id",
        "correlation_id",
        "data.order.id",
        "data.order.customer.id",
        "data.order.payment_source.id",
        "data.order.payment_source.gateway_id",
    ] {
        bounded(&order_placed(), path, MAX_ID_LEN);
    }
    bounded(&wallet_save(), "data.order_id", MAX_ID_LEN);
    for path in [
        "id",
        "data.order.id",
        "data.order.customer.id",
        "data.customer_payment_source_id",
    ] {
        bounded(&wallet_attach(), path, MAX_ID_LEN);
    }
}

#[test]
fn every_free_text_is_bounded_by_the_text_limit() {
    for path in [
        "data.order.number",
        "data.order.status",
        "data.order.customer.email",
        "data.order.currency_code",
    ] {
        bounded(&order_placed(), path, MAX_TEXT_LEN);
    }
    bounded(&wallet_attach(), "data.order.status", MAX_TEXT_LEN);
    // An unsupported payment source type is kept (for the event), so it is bounded too.
    let over = rejection(&with(
        &order_placed(),
        "data.order.payment_source.type",
        json!("x".repeat(MAX_TEXT_LEN + 1)),
    ));
    assert_eq!(over.field, "data.order.payment_source.type");
}

#[test]
fn the_payment_source_token_is_bounded_by_the_token_limit() {
    bounded(
        &order_placed(),
        "data.order.payment_source.payment_source_token",
        MAX_TOKEN_LEN,
    );
}

#[test]
fn metadata_is_bounded_in_keys() {
    let keys = |n: usize| {
        Value::Object(
            (0..n)
                .map(|i| (format!("k{i}"), json!(i)))
                .collect::<Map<_, _>>(),
        )
    };
    let path = "data.order.payment_source.metadata";
    assert!(parse_value(&with(&order_placed(), path, keys(MAX_METADATA_KEYS))).is_ok());
    let over = rejection(&with(&order_placed(), path, keys(MAX_METADATA_KEYS + 1)));
    assert_eq!(over.field, path);
    assert!(
        over.reason.contains(&MAX_METADATA_KEYS.to_string()),
        "{over}"
    );
}

#[test]
fn metadata_is_bounded_in_bytes_nested_values_included() {
    // `{"a":["…"]}` serializes to the string's length plus 10 bytes.
    let sized = |n: usize| json!({ "a": ["x".repeat(n - 10)] });
    assert_eq!(serde_json::to_vec(&sized(100)).unwrap().len(), 100);
    let path = "data.order.payment_source.metadata";
    assert!(parse_value(&with(&order_placed(), path, sized(MAX_METADATA_BYTES))).is_ok());
    let over = rejection(&with(&order_placed(), path, sized(MAX_METADATA_BYTES + 1)));
    assert_eq!(over.field, path);
    assert!(
        over.reason.contains(&MAX_METADATA_BYTES.to_string()),
        "{over}"
    );
}

/// A valid message padded with whitespace to exactly `len` bytes: only the size guard
/// can refuse it.
fn padded(len: usize) -> Vec<u8> {
    let mut body = serde_json::to_vec(&order_placed()).unwrap();
    body.resize(len, b' ');
    body
}

#[test]
fn the_body_is_bounded_in_bytes() {
    assert!(parse_bytes("order.placed", &padded(MAX_BODY_BYTES)).is_ok());
    let over = parse_bytes("order.placed", &padded(MAX_BODY_BYTES + 1)).expect_err("too big");
    assert_eq!(over.field, "body");
    assert!(over.reason.contains("262144"), "{over}");
}

/// `order_placed` whose metadata holds arrays nested so the whole body is `depth` deep
/// (the envelope, data, order, payment_source and metadata objects are 5 levels).
fn nested(depth: usize) -> Value {
    let inner = (5..depth).fold(json!(1), |v, _| json!([v]));
    with(
        &order_placed(),
        "data.order.payment_source.metadata",
        json!({ "deep": inner }),
    )
}

#[test]
fn the_body_is_bounded_in_json_depth() {
    assert!(!json_depth_exceeds(
        &serde_json::to_vec(&nested(MAX_JSON_DEPTH)).unwrap(),
        MAX_JSON_DEPTH
    ));
    assert!(parse_value(&nested(MAX_JSON_DEPTH)).is_ok());
    let over = rejection(&nested(MAX_JSON_DEPTH + 1));
    assert_eq!(over.field, "body");
    assert!(over.reason.contains(&MAX_JSON_DEPTH.to_string()), "{over}");
}

#[test]
fn hostile_nesting_is_refused_without_recursing_into_it() {
    // Far beyond serde_json's own recursion limit, and cheap to refuse.
    let body = "[".repeat(MAX_BODY_BYTES);
    let over = parse_bytes("order.placed", body.as_bytes()).expect_err("too deep");
    assert!(over.reason.contains("nested deeper"), "{over}");
}
