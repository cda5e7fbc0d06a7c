//! One mutation of one field of a valid message — removed, mistyped, null, empty or over
//! its limit — and the rejection that must name exactly that field.

use super::messages::parse_as;
use serde_json::{Value, json};
use wallet_worker::domain::limits::{MAX_ID_LEN, MAX_TEXT_LEN, MAX_TOKEN_LEN};

/// What a field holds, which decides how it can be broken.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Id,
    Text,
    Token,
    Bool,
    Int,
    Time,
    Object,
}
use Kind::*;

/// A field by its dotted path, what it holds, and whether it is required.
pub type Field = (&'static str, Kind, bool);

/// `order.placed` that saves an external source (so no field is skipped as a guest's).
#[rustfmt::skip]
pub const ORDER_PLACED: &[Field] = &[
    ("id", Id, true), ("occurred_at", Time, true), ("correlation_id", Id, false),
    ("data", Object, true), ("data.order", Object, true), ("data.order.id", Id, true),
    ("data.order.number", Text, false), ("data.order.status", Text, true),
    ("data.order.customer", Object, false), ("data.order.customer.id", Id, true),
    ("data.order.customer.email", Text, false), ("data.order.guest", Bool, false),
    ("data.order.currency_code", Text, false), ("data.order.total_amount_cents", Int, false),
    ("data.order.payment_source", Object, false), ("data.order.payment_source.type", Text, true),
    ("data.order.payment_source.id", Id, true), ("data.order.payment_source.gateway_id", Id, true),
    ("data.order.payment_source.payment_source_token", Token, true),
    ("data.order.payment_source.metadata", Object, false),
    ("data.order.save_payment_source_to_customer_wallet", Bool, false),
];

#[rustfmt::skip]
pub const WALLET_SAVE: &[Field] = &[
    ("id", Id, true), ("occurred_at", Time, true), ("data", Object, true), ("data.order_id", Id, true),
];

#[rustfmt::skip]
pub const WALLET_ATTACH: &[Field] = &[
    ("id", Id, true), ("correlation_id", Id, false), ("data", Object, true),
    ("data.order", Object, true), ("data.order.id", Id, true), ("data.order.status", Text, true),
    ("data.order.customer", Object, true), ("data.order.customer.id", Id, true),
    ("data.customer_payment_source_id", Id, true),
];

#[rustfmt::skip]
pub const WALLET_CHANGE: &[Field] = &[
    ("id", Id, true), ("correlation_id", Id, false), ("data", Object, true),
    ("data.customer_id", Id, true), ("data.customer_payment_source_id", Id, true),
];

/// The replacements a field of `kind` must refuse, each with the limit its rejection
/// must name; `None` removes the field.
fn mutations(kind: Kind, required: bool) -> Vec<(Option<Value>, Option<usize>)> {
    let bad = |values: &[Value]| {
        values
            .iter()
            .map(|v| (Some(v.clone()), None))
            .collect::<Vec<_>>()
    };
    let long = |max: usize| (Some(json!("x".repeat(max + 1))), Some(max));
    let mut out = match kind {
        Id => [bad(&[json!(7), json!("")]), vec![long(MAX_ID_LEN)]].concat(),
        Text => [
            bad(&[json!([]), json!(""), json!("a\u{7}b")]),
            vec![long(MAX_TEXT_LEN)],
        ]
        .concat(),
        Token => [
            bad(&[json!({}), json!(""), json!("a\nb")]),
            vec![long(MAX_TOKEN_LEN)],
        ]
        .concat(),
        Time => bad(&[json!(7), json!(""), json!("2026-13-45T00:00:00Z")]),
        Bool => bad(&[json!("yes"), json!(1)]),
        Int => bad(&[json!("many"), json!(1.5), json!(u64::MAX)]),
        Object => bad(&[json!(7), json!("x")]),
    };
    if required {
        out.extend([(None, None), (Some(Value::Null), None)]);
    }
    out
}

/// `message` with the field at `path` set to `value`, or removed when `None`.
pub fn mutated(message: &Value, path: &str, value: Option<Value>) -> Value {
    let mut message = message.clone();
    let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
    let parent = parent
        .split('.')
        .filter(|k| !k.is_empty())
        .fold(&mut message, |v, k| &mut v[k]);
    let parent = parent.as_object_mut().expect("parent is an object");
    match value {
        Some(value) => parent.insert(field.to_owned(), value),
        None => parent.remove(field),
    };
    message
}

/// Applies every mutation of every field of `fields` to `message`, one at a time.
pub fn assert_each_mutation_is_named(message: &Value, fields: &[Field]) {
    let key = message["type"].as_str().expect("a type");
    for &(path, kind, required) in fields {
        for (value, limit) in mutations(kind, required) {
            let bad = mutated(message, path, value.clone());
            let rejection = parse_as(key, &bad).expect_err(&format!("{path} = {value:?} accepted"));
            assert_eq!(rejection.field, path, "{path} = {value:?}: {rejection}");
            if let Some(limit) = limit {
                assert!(rejection.reason.contains(&limit.to_string()), "{rejection}");
            }
        }
    }
}
