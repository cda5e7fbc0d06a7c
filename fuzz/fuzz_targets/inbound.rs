//! Fuzzes the whole inbound path without I/O: a delivery (routing key, optional AMQP
//! `message_id`, body) is parsed; an accepted message is turned into what the worker
//! sends on (the signed token_url request, the outbound events) and checked; a rejected
//! one must name its field and must not echo anything secret (docs/operations.md, failure handling; docs/interface.md, secrets).
//!
//! Input layout: byte 0 selects the routing key (bits 0, 1 and 3) and whether a
//! `message_id` is present (bit 2); with one, it runs up to the first NUL byte, the body follows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use wallet_worker::domain::events::{
    self, AttachRejection, SaveFailure, SourceSummary, WalletChange, WalletRejection,
};
use wallet_worker::domain::ids::SourceId;
use wallet_worker::domain::limits::{
    MAX_ID_LEN, MAX_METADATA_BYTES, MAX_METADATA_KEYS, MAX_TEXT_LEN, MAX_TOKEN_LEN,
};
use wallet_worker::domain::{self, Command, Inbound, PaymentSource, RawMessage, Rejection, Secret};
use wallet_worker::gateway::{SaveRequest, sign, verify};

const ROUTING_KEYS: [&str; 8] = [
    "order.placed",
    "wallet.save",
    "wallet.attach",
    "order.cancelled",
    "wallet.remove",
    "wallet.set_default",
    "wallet.saved",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let routing_key = ROUTING_KEYS[usize::from(selector & 3) | usize::from(selector & 8) >> 1];
    let (message_id, body) = match (selector & 4 != 0, rest.iter().position(|&b| b == 0)) {
        (true, Some(end)) => (std::str::from_utf8(&rest[..end]).ok(), &rest[end + 1..]),
        _ => (None, rest),
    };
    let raw = RawMessage {
        body,
        routing_key,
        message_id,
    };
    match domain::parse(raw) {
        Ok(inbound) => accepted(&inbound, raw),
        Err(rejection) => rejected(&rejection, body),
    }
    if let Some(id) = domain::envelope::sniff_id(raw) {
        assert!(id.chars().count() <= MAX_ID_LEN);
    }
});

fn accepted(inbound: &Inbound, raw: RawMessage<'_>) {
    let meta = &inbound.meta;
    assert_eq!(meta.kind.as_str(), raw.routing_key);
    bounded(&meta.id, MAX_ID_LEN);
    assert!(raw.message_id.is_none_or(|id| meta.id == id));
    if let Some(correlation_id) = &meta.correlation_id {
        bounded(correlation_id, MAX_ID_LEN);
    }
    let json: Value = serde_json::from_slice(raw.body).expect("an accepted body is JSON");
    assert_eq!(json["id"], meta.id.as_str());
    match &inbound.command {
        Command::OrderPlaced(placed) => order_placed(inbound, placed, &json),
        Command::WalletSave(save) => {
            bounded(&save.order_id, MAX_ID_LEN);
            let failed = events::WalletSaveFailed {
                order_id: save.order_id.clone(),
                customer_id: None,
                reason: SaveFailure::GatewayRefused,
                message: "refused".into(),
            };
            event_round_trips(inbound, "wallet.save_failed", failed);
        }
        Command::WalletAttach(attach) => {
            for id in [
                attach.order_id.as_str(),
                attach.customer_id.as_str(),
                attach.customer_payment_source_id.as_str(),
            ] {
                bounded(id, MAX_ID_LEN);
            }
            bounded(attach.order_status.as_str(), MAX_TEXT_LEN);
            let rejected = events::WalletAttachRejected {
                order_id: attach.order_id.clone(),
                customer_payment_source_id: attach.customer_payment_source_id.clone(),
                reason: AttachRejection::NotFound,
            };
            event_round_trips(inbound, "wallet.attach_rejected", rejected);
        }
        Command::WalletRemove(target) => wallet_change(inbound, target, WalletChange::Remove),
        Command::WalletSetDefault(target) => {
            wallet_change(inbound, target, WalletChange::SetDefault)
        }
    }
}

/// A `wallet.remove` or `wallet.set_default`: bounded ids, and its refusal published
/// under the key of that change.
fn wallet_change(inbound: &Inbound, target: &domain::SourceRef, change: WalletChange) {
    bounded(&target.customer_id, MAX_ID_LEN);
    bounded(&target.customer_payment_source_id, MAX_ID_LEN);
    let key = match change {
        WalletChange::Remove => "wallet.remove_rejected",
        WalletChange::SetDefault => "wallet.default_rejected",
    };
    let rejected = events::WalletChangeRejected {
        change,
        customer_id: target.customer_id.clone(),
        customer_payment_source_id: target.customer_payment_source_id.clone(),
        reason: WalletRejection::NotFound,
    };
    event_round_trips(inbound, key, rejected);
}

fn order_placed(inbound: &Inbound, placed: &domain::OrderPlaced, json: &Value) {
    let order = &placed.order;
    bounded(&order.id, MAX_ID_LEN);
    assert_eq!(json["data"]["order"]["id"], order.id.as_str());
    for text in [&order.number, &order.currency_code].into_iter().flatten() {
        bounded(text, MAX_TEXT_LEN);
    }
    let Some(customer) = &order.customer else {
        return;
    };
    bounded(&customer.id, MAX_ID_LEN);
    let Some(PaymentSource::External(payment)) = &order.payment_source else {
        return;
    };
    let token = payment.token.expose();
    assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
    assert!(payment.metadata.len() <= MAX_METADATA_KEYS);
    assert!(serde_json::to_vec(&payment.metadata).unwrap().len() <= MAX_METADATA_BYTES);
    let elsewhere = format!("{}{}{:?}", payment.id, payment.gateway_id, payment.metadata);
    if token.len() >= 8 && !elsewhere.contains(token) {
        assert!(
            !format!("{payment:?}").contains(token),
            "Debug shows the token"
        );
    }
    // The token_url request: valid JSON carrying the token, a header-safe key, a signature.
    let request = SaveRequest {
        order,
        customer,
        payment,
    };
    let body = request.body();
    let document: Value = serde_json::from_slice(&body).expect("the request is JSON");
    assert_eq!(
        document["data"]["attributes"]["payment_source_token"],
        token
    );
    assert!(
        request
            .idempotency_key()
            .bytes()
            .all(|b| b.is_ascii_graphic())
    );
    let secret = Secret::new("whsec_fuzz");
    assert!(verify(&body, &secret, &sign(&body, &secret)));
    let saved = events::WalletSaved {
        order_id: order.id.clone(),
        customer_id: customer.id.clone(),
        customer_payment_source: SourceSummary {
            id: SourceId::stored("QgDXpwsqDx".into()),
            gateway_id: payment.gateway_id.clone(),
            name: "Visa ending in 4242".into(),
            metadata: payment.metadata.clone(),
            default: true,
        },
        created: true,
    };
    event_round_trips(inbound, "wallet.saved", saved);
}

/// The event envelope is JSON with a fresh id, caused by the inbound message, and
/// published under the routing key `key` its payload names.
fn event_round_trips<T: events::Event>(inbound: &Inbound, key: &'static str, data: T) {
    let event = events::outbound(&inbound.meta, data);
    assert_eq!(event.routing_key(), key);
    let json: Value = serde_json::from_slice(&event.body).expect("events are JSON");
    assert_eq!(json["type"], key);
    assert_eq!(json["causation_id"], inbound.meta.id.as_str());
    assert_eq!(
        json["correlation_id"].as_str(),
        inbound.meta.correlation_id.as_deref()
    );
    assert_ne!(event.id, inbound.meta.id.as_str());
}

fn rejected(rejection: &Rejection, body: &[u8]) {
    let field = &rejection.field;
    assert!(!field.is_empty() && !rejection.reason.is_empty());
    // A field is a path of wire names, never text from the message.
    assert!(
        field
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'),
        "field {field:?}"
    );
    let text = rejection.to_string();
    assert!(text.len() <= 256, "rejection of {} bytes", text.len());
    assert!(!text.contains("tok_"), "rejection echoes a token: {text}");
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    // A reason quotes nothing: serde quotes values (strings in double quotes, numbers
    // and booleans in backticks), and a value may be a token whatever its JSON type.
    let reason = &rejection.reason;
    assert!(
        !reason.contains(['`', '"']),
        "rejection quotes a value: {text}"
    );
    // The reason's own words may coincide with a short or wordy token (libFuzzer learns
    // `missing field` from our comparisons), so only token-like values are looked for:
    // 8+ bytes with a letter and a digit, or 8+ digits (a card number sent as a number).
    let mut tokens = Vec::new();
    collect_tokens(&json, &mut tokens);
    for token in tokens.iter().filter(|t| looks_like_a_token(t)) {
        assert!(
            !reason.contains(token.as_str()),
            "rejection echoes a token: {text}"
        );
    }
}

fn looks_like_a_token(value: &str) -> bool {
    let digits = value.bytes().filter(u8::is_ascii_digit).count();
    value.len() >= 8
        && (digits >= 8 || (digits > 0 && value.bytes().any(|b| b.is_ascii_alphabetic())))
}

/// Every string under a `payment_source_token` key, at any depth.
fn collect_tokens(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => collect_in_map(map, out),
        Value::Array(items) => items.iter().for_each(|v| collect_tokens(v, out)),
        _ => {}
    }
}

fn collect_in_map(map: &Map<String, Value>, out: &mut Vec<String>) {
    for (key, value) in map {
        // A secret field's value, whatever its JSON type, as the text an echo would show.
        if wallet_worker::domain::secret::is_secret_field(key) {
            out.push(match value {
                Value::String(token) => token.clone(),
                other => other.to_string(),
            });
        }
        collect_tokens(value, out);
    }
}

fn bounded(text: &str, max: usize) {
    assert!(
        !text.is_empty() && text.len() <= max,
        "{} bytes, limit {max}",
        text.len()
    );
    assert!(!text.chars().any(char::is_control));
}
