//! A stored dead letter as people and scripts see it (docs/interface.md, dead letters):
//! its body, headers and properties as text with every secret masked, and the JSON
//! entry of `dlq list --json`. The CLI and the console both show dead letters this way.

use crate::broker::amqp_json::header_text;
use crate::domain::redact::{self, header_value};
use crate::store::dead_letters::{DeadLetter, time_text};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A body as displayed: text when it is UTF-8, else base64; secrets masked either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayBody {
    Text(String),
    Base64(String),
}

/// The body with its secrets masked; JSON pretty-printed if `pretty`.
pub fn body(letter: &DeadLetter, pretty: bool) -> DisplayBody {
    let masked = redact::redact(&letter.body);
    match String::from_utf8(masked) {
        Ok(text) if pretty => match serde_json::from_str::<Value>(&text) {
            Ok(doc) => DisplayBody::Text(serde_json::to_string_pretty(&doc).unwrap_or(text)),
            Err(_) => DisplayBody::Text(text),
        },
        Ok(text) => DisplayBody::Text(text),
        Err(err) => DisplayBody::Base64(BASE64_STANDARD.encode(err.into_bytes())),
    }
}

/// Every header, its value as text (tables and arrays as JSON), masked when its name
/// says it is a secret or it holds secret fields.
pub fn headers(letter: &DeadLetter) -> BTreeMap<String, String> {
    let Some(map) = letter.headers.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(name, value)| (name.clone(), header_value(name, &header_text(value))))
        .collect()
}

/// The properties that are set, other than headers, as text.
pub fn properties(letter: &DeadLetter) -> BTreeMap<String, String> {
    let Some(map) = letter.properties.as_object() else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(name, value)| {
            (
                name.clone(),
                header_value(name, value.as_str().unwrap_or_default()),
            )
        })
        .collect()
}

/// `-` when nothing is known.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

/// Attempts as text, `-` when unknown.
pub fn attempts(letter: &DeadLetter) -> String {
    letter
        .attempts
        .map_or_else(|| "-".to_owned(), |n| n.to_string())
}

/// The `dlq list --json` entry: what the dead letter is, why it died, its
/// `properties`, `headers`, and `body` (UTF-8 text) or `body_base64`.
pub fn to_json(letter: &DeadLetter) -> Value {
    let mut out = json!({
        "id": letter.id,
        "message_id": letter.message_id,
        "routing_key": letter.routing_key,
        "error": letter.error,
        "error_detail": letter.detail,
        "attempts": letter.attempts,
        "dead_lettered_at": time_text(letter.dead_lettered_at),
        "ingested_at": time_text(letter.ingested_at),
        "group": letter.group_key,
        "order_id": letter.order_id,
        "customer_id": letter.customer_id,
        "replayed_at": letter.replayed_at.map(time_text),
        "replayed_by": letter.replayed_by,
        "body_size": letter.body.len(),
        "properties": properties(letter),
        "headers": headers(letter),
    });
    let (key, body) = match body(letter, false) {
        DisplayBody::Text(text) => ("body", text),
        DisplayBody::Base64(encoded) => ("body_base64", encoded),
    };
    out[key] = Value::String(body);
    out
}
