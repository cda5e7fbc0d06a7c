//! Test fixtures of the domain's unit tests: one valid message of each type, and ways
//! to mutate one field at a dotted path and parse the result.

use super::envelope::{Inbound, RawMessage, Rejection, parse};
use serde_json::{Value, json};

/// A valid `order.placed` that saves its external payment source (docs/messages.md, inbound messages).
pub(crate) fn order_placed() -> Value {
    json!({ "id": "msg_1", "type": "order.placed", "occurred_at": "2026-11-27T16:00:00Z",
        "correlation_id": "corr_1",
        "data": { "order": {
            "id": "qaMAhZkZvd", "number": "1234", "status": "placed",
            "customer": { "id": "kWnEhpRgYD", "email": "jane@example.com" },
            "guest": false, "currency_code": "EUR", "total_amount_cents": 12900,
            "payment_source": { "type": "external_payments", "id": "yZlPsRkQvB",
                "gateway_id": "acme-pay", "payment_source_token": "tok_1a2b3c",
                "metadata": { "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030 } },
            "save_payment_source_to_customer_wallet": true } } })
}

pub(crate) fn wallet_save() -> Value {
    json!({ "id": "msg_2", "type": "wallet.save", "occurred_at": "2026-11-27T16:00:00Z",
        "data": { "order_id": "qaMAhZkZvd" } })
}

pub(crate) fn wallet_attach() -> Value {
    json!({ "id": "msg_3", "type": "wallet.attach", "occurred_at": "2026-11-27T16:00:00Z",
        "data": { "order": { "id": "Xk2mPqRsTu", "status": "pending", "customer": { "id": "kWnEhpRgYD" } },
                  "customer_payment_source_id": "QgDXpwsqDx" } })
}

/// Parses `message` as if delivered with its own `type` as routing key.
pub(crate) fn parse_value(message: &Value) -> Result<Inbound, Rejection> {
    let body = serde_json::to_vec(message).expect("fixtures serialize");
    parse_bytes(message["type"].as_str().unwrap_or("order.placed"), &body)
}

pub(crate) fn parse_bytes(routing_key: &str, body: &[u8]) -> Result<Inbound, Rejection> {
    parse(RawMessage {
        body,
        routing_key,
        message_id: None,
    })
}

/// The rejection of `message`, failing the test when it parses.
pub(crate) fn rejection(message: &Value) -> Rejection {
    match parse_value(message) {
        Ok(inbound) => panic!("expected a rejection, parsed {:?}", inbound.command),
        Err(rejection) => rejection,
    }
}

/// `message` with the value at the dotted `path` replaced by `value`.
pub(crate) fn with(message: &Value, path: &str, value: Value) -> Value {
    let mut message = message.clone();
    *at(&mut message, path) = value;
    message
}

/// `message` without the field at the dotted `path`.
pub(crate) fn without(message: &Value, path: &str) -> Value {
    let mut message = message.clone();
    let (parent, field) = path.rsplit_once('.').map_or(("", path), |(p, f)| (p, f));
    let parent = if parent.is_empty() {
        &mut message
    } else {
        at(&mut message, parent)
    };
    parent.as_object_mut().expect("an object").remove(field);
    message
}

fn at<'a>(message: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.').fold(message, |value, key| &mut value[key])
}
