//! The message envelope (docs/interface.md, message envelope) and the parse from raw AMQP delivery to a typed
//! [`Inbound`] message. Parsing does no I/O and rejects bad input before any side effect.

use super::commands::{Command, OrderPlaced, SourceRef, WalletAttach, WalletSave};
use super::ids::MessageId;
use super::limits::{MAX_BODY_BYTES, MAX_ID_LEN, MAX_JSON_DEPTH, json_depth_exceeds, text};
use super::message_type::MessageType;
pub use super::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// What the broker handed us, before any interpretation.
#[derive(Debug, Clone, Copy)]
pub struct RawMessage<'a> {
    pub body: &'a [u8],
    /// The routing key the message was originally published with.
    pub routing_key: &'a str,
    /// The AMQP `message_id` property, when set.
    pub message_id: Option<&'a str>,
}

/// The envelope fields every handler needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// The idempotency key (docs/interface.md, message envelope).
    pub id: MessageId,
    pub kind: MessageType,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    /// The transport says this delivery may have been handled before (a redelivery):
    /// handlers then check the inbox before calling out.
    pub maybe_seen: bool,
}

/// A parsed, validated inbound message.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub meta: Meta,
    pub command: Command,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Parses one delivery. Bounds are checked first, so a hostile body costs at most one
/// linear scan before it is refused.
pub fn parse(raw: RawMessage<'_>) -> Result<Inbound, Rejection> {
    let body = bounded(raw.body)?;
    let envelope: RawEnvelope<'_> = from_json(body, "")?;
    let id = MessageId::parse(&envelope.id, "id")?;
    let kind = MessageType::parse(&envelope.kind)
        .ok_or_else(|| Rejection::new("type", "unknown message type"))?;
    if kind.as_str() != raw.routing_key {
        return Err(Rejection::new(
            "type",
            format!("`{kind}` does not match the routing key"),
        ));
    }
    if raw
        .message_id
        .is_some_and(|property| property != id.as_str())
    {
        return Err(Rejection::new(
            "message_id",
            "AMQP message_id property differs from the envelope id",
        ));
    }
    let correlation_id = envelope
        .correlation_id
        .map(|c| text(&c, "correlation_id", MAX_ID_LEN))
        .transpose()?;
    let command = command(kind, envelope.data.get())?;
    Ok(Inbound {
        meta: Meta {
            id,
            kind,
            occurred_at: envelope.occurred_at,
            correlation_id,
            maybe_seen: false,
        },
        command,
    })
}

/// The body as text, if it is within the bounds of size, encoding and nesting.
fn bounded(body: &[u8]) -> Result<&str, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::new(
            "body",
            format!("larger than the {MAX_BODY_BYTES}-byte limit"),
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| Rejection::new("body", format!("not UTF-8 ({e})")))?;
    if json_depth_exceeds(body, MAX_JSON_DEPTH) {
        return Err(Rejection::new(
            "body",
            format!("JSON nested deeper than the {MAX_JSON_DEPTH}-level limit"),
        ));
    }
    Ok(text)
}

/// The typed command of a message of type `kind` from its `data`.
fn command(kind: MessageType, data: &str) -> Result<Command, Rejection> {
    Ok(match kind {
        MessageType::OrderPlaced => {
            Command::OrderPlaced(OrderPlaced::parse(from_json(data, "data")?)?)
        }
        MessageType::WalletSave => {
            Command::WalletSave(WalletSave::parse(from_json(data, "data")?)?)
        }
        MessageType::WalletAttach => {
            Command::WalletAttach(WalletAttach::parse(from_json(data, "data")?)?)
        }
        MessageType::WalletRemove => {
            Command::WalletRemove(SourceRef::parse(from_json(data, "data")?)?)
        }
        MessageType::WalletSetDefault => {
            Command::WalletSetDefault(SourceRef::parse(from_json(data, "data")?)?)
        }
    })
}

/// Best-effort message id for logs and dead-letter listings of a message that failed
/// to parse: the property, else the envelope `id` if the body gets that far.
pub fn sniff_id(raw: RawMessage<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    if let Some(id) = raw.message_id {
        return Some(id.chars().take(MAX_ID_LEN).collect());
    }
    if raw.body.len() > MAX_BODY_BYTES || json_depth_exceeds(raw.body, MAX_JSON_DEPTH) {
        return None;
    }
    let parsed: IdOnly = serde_json::from_slice(raw.body).ok()?;
    Some(parsed.id.chars().take(MAX_ID_LEN).collect())
}

/// Best-effort `correlation_id` of a message that failed to parse (say, its `data` is
/// malformed), so its `wallet.dead_lettered` still reaches the pipeline that waits for
/// it. Bounded like [`sniff_id`]; `None` unless the envelope gives a usable one.
pub fn sniff_correlation_id(raw: RawMessage<'_>) -> Option<String> {
    #[derive(Deserialize)]
    struct CorrelationOnly {
        correlation_id: Option<String>,
    }
    if raw.body.len() > MAX_BODY_BYTES || json_depth_exceeds(raw.body, MAX_JSON_DEPTH) {
        return None;
    }
    let parsed: CorrelationOnly = serde_json::from_slice(raw.body).ok()?;
    parsed
        .correlation_id
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control))
}

/// Field names of the wire shapes: a rejection's path is made of these only, so a key
/// chosen by the sender (in `metadata`, or an unknown field) never reaches a log line or
/// a dead-letter header. A path stops at the first other key (at its known parent).
#[rustfmt::skip]
const WIRE_FIELDS: [&str; 21] = [
    "id", "type", "occurred_at", "correlation_id", "data", "order", "number", "status",
    "customer", "email", "guest", "currency_code", "total_amount_cents", "payment_source",
    "gateway_id", "payment_source_token", "metadata", "save_payment_source_to_customer_wallet",
    "order_id", "customer_payment_source_id", "customer_id",
];

/// Deserializes `json` (the whole of it: trailing input is refused), naming the failing
/// field by its path under `prefix`.
pub(crate) fn from_json<'de, T: Deserialize<'de>>(
    json: &'de str,
    prefix: &str,
) -> Result<T, Rejection> {
    let mut de = serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = known_path(err.path());
        let field = match (prefix.is_empty(), path.is_empty()) {
            (true, true) => "body".to_string(),
            (true, false) => path,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{path}"),
        };
        let message = err.inner().to_string();
        // serde names a missing field in its message (one of ours), at the parent's path.
        if let Some(missing) = message
            .split(" at line ")
            .next()
            .and_then(|m| m.strip_prefix("missing field `"))
            .and_then(|rest| rest.strip_suffix('`'))
        {
            let field = match field.as_str() {
                "body" => missing.to_owned(),
                parent => format!("{parent}.{missing}"),
            };
            return Rejection::new(field, "missing field");
        }
        Rejection::new(field, describe_serde_error(err.inner()))
    })?;
    de.end().map_err(|err| {
        let field = if prefix.is_empty() { "body" } else { prefix };
        Rejection::new(field, describe_serde_error(&err))
    })?;
    Ok(value)
}

/// The path as dotted wire field names, cut before the first segment that is not one.
fn known_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } if WIRE_FIELDS.contains(&key.as_str()) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            _ => break,
        }
    }
    out
}

/// What was wrong and what was expected, never the value: serde's messages quote the
/// offending value, a string in double quotes (`invalid type: string "tok_…"`, escaped
/// the way `Debug` escapes it) and a number, boolean or character in backticks
/// (``invalid type: integer `4242424242424242`, expected a string``), and a value may
/// be a token whatever its JSON type. Every quoted part is dropped:
/// `invalid type: integer, expected a string`.
fn describe_serde_error(err: &serde_json::Error) -> String {
    let message = err.to_string();
    let message = message.split(" at line ").next().unwrap_or(&message);
    let mut out = String::with_capacity(message.len());
    let (mut quote, mut escaped) = (None, false);
    for ch in message.chars() {
        match quote {
            Some(_) if escaped => escaped = false,
            Some('"') if ch == '\\' => escaped = true,
            Some(open) if ch == open => quote = None,
            Some(_) => {}
            None if ch == '"' || ch == '`' => {
                out.truncate(out.trim_end().len());
                quote = Some(ch);
            }
            None => out.push(ch),
        }
    }
    out
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
