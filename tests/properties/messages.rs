//! Generators of valid inbound messages, within the bounds of `domain::limits`, and
//! the projection of a parsed message back to the JSON it must have come from.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wallet_worker::domain::{Command, Inbound, PaymentSource, RawMessage, Rejection, parse};

pub fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9]{1,128}",
        "[A-Za-z0-9_.:/ -]{1,64}",
        "\\PC{1,32}"
    ]
}

pub fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{1,320}", "\\PC{1,80}"]
}

pub fn token() -> impl Strategy<Value = String> {
    prop_oneof!["tok_[A-Za-z0-9]{1,1020}", "\\PC{1,256}"]
}

fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    let value = prop_oneof![
        any::<i64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from)
    ];
    prop::collection::btree_map("[a-z_]{1,12}", value, 0..12).prop_map(|m| m.into_iter().collect())
}

fn external_source() -> impl Strategy<Value = Value> {
    (id(), id(), token(), metadata()).prop_map(|(id, gateway_id, token, metadata)| {
        json!({ "type": "external_payments", "id": id, "gateway_id": gateway_id,
                "payment_source_token": token, "metadata": metadata })
    })
}

/// A valid `order.placed`: guest or not, with or without customer and payment source.
pub fn order_placed() -> impl Strategy<Value = Value> {
    let other_source = "[a-z_]{1,40}".prop_map(|kind| json!({ "type": kind + "_payments_x" }));
    let source = prop_oneof![3 => external_source(), 1 => other_source];
    let customer = (id(), prop::option::of(text()))
        .prop_map(|(id, email)| json!({ "id": id, "email": email }));
    let head = (
        id(),
        prop::option::of(text()),
        text(),
        prop::option::of(customer),
        any::<bool>(),
    );
    let tail = (
        prop::option::of(text()),
        any::<i64>(),
        prop::option::of(source),
        any::<bool>(),
    );
    (id(), prop::option::of(id()), head, tail).prop_map(|(msg_id, corr, head, tail)| {
        let (id, number, status, customer, guest) = head;
        let (currency_code, cents, payment_source, save) = tail;
        let order = json!({ "id": id, "number": number, "status": status, "customer": customer,
            "guest": guest, "currency_code": currency_code, "total_amount_cents": cents,
            "payment_source": payment_source, "save_payment_source_to_customer_wallet": save });
        envelope(msg_id, "order.placed", corr, json!({ "order": order }))
    })
}

/// An `order.placed` that saves an external source: every field is present and checked.
pub fn saving_order() -> impl Strategy<Value = Value> {
    (order_placed(), id(), external_source()).prop_map(|(mut m, customer_id, source)| {
        let order = &mut m["data"]["order"];
        order["guest"] = json!(false);
        order["customer"] = json!({ "id": customer_id, "email": "jane@example.com" });
        order["payment_source"] = source;
        m
    })
}

pub fn wallet_save() -> impl Strategy<Value = Value> {
    (id(), id()).prop_map(|(msg_id, order_id)| {
        envelope(msg_id, "wallet.save", None, json!({ "order_id": order_id }))
    })
}

pub fn wallet_attach() -> impl Strategy<Value = Value> {
    (id(), id(), text(), id(), id(), prop::option::of(id())).prop_map(
        |(msg_id, oid, status, cid, sid, corr)| {
            let order = json!({ "id": oid, "status": status, "customer": { "id": cid } });
            envelope(
                msg_id,
                "wallet.attach",
                corr,
                json!({ "order": order, "customer_payment_source_id": sid }),
            )
        },
    )
}

/// A valid `wallet.remove` or `wallet.set_default`.
pub fn wallet_change() -> impl Strategy<Value = Value> {
    let kind = prop_oneof![Just("wallet.remove"), Just("wallet.set_default")];
    (id(), kind, id(), id(), prop::option::of(id())).prop_map(|(msg_id, kind, cid, sid, corr)| {
        let data = json!({ "customer_id": cid, "customer_payment_source_id": sid });
        envelope(msg_id, kind, corr, data)
    })
}

fn envelope(id: String, kind: &str, correlation_id: Option<String>, data: Value) -> Value {
    json!({ "id": id, "type": kind, "occurred_at": "2026-11-27T16:00:00Z",
            "correlation_id": correlation_id, "data": data })
}

/// Parses `message` as delivered under `routing_key`, with `message_id` = its `id`.
pub fn parse_as(routing_key: &str, message: &Value) -> Result<Inbound, Rejection> {
    let body = serde_json::to_vec(message).expect("json");
    let message_id = message["id"].as_str();
    parse(RawMessage {
        body: &body,
        routing_key,
        message_id,
    })
}

/// The parsed message written back in the shape of the generated one: a guest order
/// has no customer, and absent optional fields are `null`.
pub fn typed(inbound: &Inbound) -> Value {
    let data = match &inbound.command {
        Command::OrderPlaced(placed) => {
            let o = &placed.order;
            let source = o.payment_source.as_ref().map(|s| match s {
                PaymentSource::Unsupported { kind } => json!({ "type": kind }),
                PaymentSource::External(e) => json!({ "type": "external_payments", "id": e.id,
                    "gateway_id": e.gateway_id, "payment_source_token": e.token.expose(), "metadata": e.metadata }),
            });
            let customer = o
                .customer
                .as_ref()
                .map(|c| json!({ "id": c.id, "email": c.email }));
            json!({ "order": { "id": o.id, "number": o.number, "status": o.status, "customer": customer,
                "currency_code": o.currency_code, "total_amount_cents": o.total_amount_cents,
                "payment_source": source, "save_payment_source_to_customer_wallet": o.save_to_wallet } })
        }
        Command::WalletSave(save) => json!({ "order_id": save.order_id }),
        Command::WalletAttach(a) => json!({
            "order": { "id": a.order_id, "status": a.order_status, "customer": { "id": a.customer_id } },
            "customer_payment_source_id": a.customer_payment_source_id }),
        Command::WalletRemove(c) | Command::WalletSetDefault(c) => json!({
            "customer_id": c.customer_id, "customer_payment_source_id": c.customer_payment_source_id }),
    };
    let meta = &inbound.meta;
    json!({ "id": meta.id, "type": meta.kind, "occurred_at": meta.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "correlation_id": meta.correlation_id, "data": data })
}

/// What `typed` must give for a generated message: `guest` is folded into `customer`.
pub fn expected(message: &Value) -> Value {
    let mut expected = message.clone();
    let order = expected.get_mut("data").and_then(|d| d.get_mut("order"));
    if let Some(order) = order.and_then(Value::as_object_mut)
        && order.remove("guest") == Some(json!(true))
    {
        order.insert("customer".into(), Value::Null);
    }
    expected
}
