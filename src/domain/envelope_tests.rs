//! Unit tests of the envelope parse: each malformed case names its field, and no
//! rejection carries a value or a key taken from the message (docs/operations.md, failure handling; docs/interface.md, secrets).

use super::*;
use crate::domain::fixtures::{
    order_placed, parse_bytes, parse_value, rejection, wallet_attach, wallet_save, with, without,
};
use serde_json::json;

const TOKEN: &str = "tok_secret_7f3a9c";
const TOKEN_PATH: &str = "data.order.payment_source.payment_source_token";

#[test]
fn each_valid_message_type_parses_into_its_command() {
    let placed = parse_value(&order_placed()).expect("order.placed");
    assert_eq!(placed.meta.id, "msg_1");
    assert_eq!(placed.meta.correlation_id.as_deref(), Some("corr_1"));
    let Command::OrderPlaced(placed) = placed.command else {
        panic!("order.placed")
    };
    assert!(placed.order.save_to_wallet);
    assert!(matches!(
        parse_value(&wallet_save()).unwrap().command,
        Command::WalletSave(_)
    ));
    assert!(matches!(
        parse_value(&wallet_attach()).unwrap().command,
        Command::WalletAttach(_)
    ));
}

#[test]
fn a_body_that_is_not_json_utf8_or_a_single_document_is_refused_as_body() {
    for body in [&b"{not json"[..], b"", b"\xff\xfe{}", b"[]", b"null"] {
        assert_eq!(
            parse_bytes("order.placed", body)
                .expect_err("refused")
                .field,
            "body"
        );
    }
    let mut trailing = serde_json::to_vec(&order_placed()).unwrap();
    trailing.extend_from_slice(b" {}");
    let refused = parse_bytes("order.placed", &trailing).expect_err("trailing input");
    assert_eq!(refused.field, "body");
    assert!(refused.reason.contains("trailing"), "{refused}");
}

#[test]
fn the_type_must_be_known_and_equal_the_routing_key() {
    assert_eq!(
        rejection(&with(&order_placed(), "type", json!("order.cancelled"))).field,
        "type"
    );
    let body = serde_json::to_vec(&order_placed()).unwrap();
    assert_eq!(
        parse_bytes("wallet.save", &body)
            .expect_err("wrong key")
            .field,
        "type"
    );
}

#[test]
fn a_message_id_property_must_equal_the_envelope_id() {
    let body = serde_json::to_vec(&order_placed()).unwrap();
    let raw = |message_id| RawMessage {
        body: &body,
        routing_key: "order.placed",
        message_id,
    };
    assert!(parse(raw(Some("msg_1"))).is_ok());
    assert_eq!(
        parse(raw(Some("other"))).expect_err("differs").field,
        "message_id"
    );
}

#[test]
fn missing_mistyped_and_empty_fields_are_named_by_their_path() {
    let m = order_placed();
    assert_eq!(rejection(&without(&m, "id")).field, "id");
    assert_eq!(
        rejection(&without(&m, "data.order.status")).field,
        "data.order.status"
    );
    assert_eq!(rejection(&without(&m, TOKEN_PATH)).field, TOKEN_PATH);
    assert_eq!(
        rejection(&with(&m, "occurred_at", json!("yesterday"))).field,
        "occurred_at"
    );
    assert_eq!(
        rejection(&with(&m, "data.order.guest", json!("yes"))).field,
        "data.order.guest"
    );
    assert_eq!(
        rejection(&with(&m, "data.order.customer.id", json!(""))).field,
        "data.order.customer.id"
    );
    assert_eq!(rejection(&with(&m, "data", json!([]))).field, "data");
    let attach = without(&wallet_attach(), "data.order.customer");
    assert_eq!(rejection(&attach).field, "data.order.customer");
}

#[test]
fn a_token_with_escaped_quotes_in_a_mistyped_field_is_not_echoed() {
    let token = format!("x\"{TOKEN}\"y");
    for path in [
        "data.order.guest",
        "data.order.total_amount_cents",
        "data.order.payment_source.metadata",
    ] {
        let refused = rejection(&with(&order_placed(), path, json!(token)));
        assert_eq!(refused.field, path);
        assert!(!refused.to_string().contains("secret"), "{refused}");
    }
}

#[test]
fn keys_chosen_by_the_sender_never_reach_the_rejection() {
    let metadata = json!({ TOKEN: 1 });
    let mut body = serde_json::to_string(&with(
        &order_placed(),
        "data.order.payment_source.metadata",
        metadata,
    ))
    .unwrap();
    body = body.replace(":1}", ":1e999}");
    let refused = parse_bytes("order.placed", body.as_bytes()).expect_err("number out of range");
    assert_eq!(refused.field, "data.order.payment_source.metadata");
    assert!(!refused.to_string().contains(TOKEN), "{refused}");
    let refused = parse_bytes("order.placed", format!(r#"{{"{TOKEN}": [1,}}"#).as_bytes())
        .expect_err("syntax");
    assert_eq!(refused.field, "body");
    assert!(!refused.to_string().contains(TOKEN), "{refused}");
}

#[test]
fn control_characters_in_tokens_and_nul_in_metadata_are_refused() {
    let refused = rejection(&with(&order_placed(), TOKEN_PATH, json!("tok\u{0}1")));
    assert_eq!(
        (refused.field.as_str(), refused.reason.as_str()),
        (TOKEN_PATH, "contains control characters")
    );
    for metadata in [
        json!({ "a": "x\u{0}" }),
        json!({ "a\u{0}": 1 }),
        json!({ "a": [{ "b": "\u{0}" }] }),
    ] {
        let refused = rejection(&with(
            &order_placed(),
            "data.order.payment_source.metadata",
            metadata,
        ));
        assert_eq!(refused.field, "data.order.payment_source.metadata");
    }
}

#[test]
fn sniff_id_is_bounded_and_gives_up_on_hostile_bodies() {
    let long = "i".repeat(10 * MAX_ID_LEN);
    let body = serde_json::to_vec(&json!({ "id": long })).unwrap();
    let raw = RawMessage {
        body: &body,
        routing_key: "x",
        message_id: None,
    };
    assert_eq!(sniff_id(raw).map(|id| id.len()), Some(MAX_ID_LEN));
    let deep = "[".repeat(1000);
    assert_eq!(
        sniff_id(RawMessage {
            body: deep.as_bytes(),
            ..raw
        }),
        None
    );
    let property = RawMessage {
        message_id: Some(&long),
        ..raw
    };
    assert_eq!(sniff_id(property).map(|id| id.len()), Some(MAX_ID_LEN));
}

#[test]
fn a_secret_field_of_any_json_type_is_refused_without_echoing_its_value() {
    for (value, expected) in [
        (
            json!(4242424242424242u64),
            "invalid type: integer, expected a string",
        ),
        (
            json!(-4242424242424242i64),
            "invalid type: integer, expected a string",
        ),
        (
            json!(4242.4242424242),
            "invalid type: floating point, expected a string",
        ),
        (json!(true), "invalid type: boolean, expected a string"),
        (
            json!({ "pan": "4242424242424242" }),
            "invalid type: map, expected a string",
        ),
        (
            json!(["4242424242424242"]),
            "invalid type: sequence, expected a string",
        ),
    ] {
        let refused = rejection(&with(&order_placed(), TOKEN_PATH, value.clone()));
        assert_eq!(refused.field, TOKEN_PATH, "{value}");
        assert_eq!(refused.reason, expected, "{value}");
        assert!(!refused.to_string().contains("4242"), "{refused}");
    }
}
