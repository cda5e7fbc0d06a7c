//! One dead letter as ops see it: who it is, why it died, and its body (masked for
//! display, kept byte for byte for replay).

use super::redact::redact;
use crate::broker::headers::{
    self, ATTEMPTS, DEAD_LETTERED_AT, ERROR, ERROR_DETAIL, ORIGINAL_ROUTING_KEY,
};
use crate::domain::envelope::{RawMessage, sniff_id};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::AMQPValue;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// A dead letter read from the queue. `Debug` leaves the body out: it may hold
/// payment tokens and must never reach a log.
#[derive(Clone)]
pub struct DeadLetterEntry {
    /// 1-based place in the queue when it was read.
    pub position: usize,
    /// The `message_id` property, else the envelope `id`, else `-`.
    pub message_id: String,
    /// Where a replay sends it: `x-wallet-original-routing-key`, else the envelope `type`.
    pub routing_key: Option<String>,
    /// `x-wallet-error`: the kind of failure (`malformed`, `order_not_found`, ...).
    pub error: Option<String>,
    /// `x-wallet-error-detail`.
    pub error_detail: Option<String>,
    /// `x-wallet-attempts`.
    pub attempts: Option<i64>,
    /// `x-wallet-dead-lettered-at` (RFC 3339).
    pub dead_lettered_at: Option<String>,
    /// All properties, headers included, as the broker delivered them.
    pub properties: BasicProperties,
    body: Vec<u8>,
}

/// A body as displayed: text when it is UTF-8, else base64; secrets masked either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisplayBody {
    Text(String),
    Base64(String),
}

impl DeadLetterEntry {
    pub fn from_delivery(position: usize, delivery: &Delivery) -> Self {
        Self::new(position, delivery.properties.clone(), delivery.data.clone())
    }

    /// Takes the delivery's body and properties without copying them.
    pub fn from_owned(position: usize, delivery: Delivery) -> Self {
        Self::new(position, delivery.properties, delivery.data)
    }

    fn new(position: usize, properties: BasicProperties, body: Vec<u8>) -> Self {
        let raw = RawMessage {
            body: &body,
            routing_key: "",
            message_id: properties.message_id().as_ref().map(|id| id.as_str()),
        };
        let message_id = sniff_id(raw).unwrap_or_else(|| "-".to_owned());
        // A dead letter the broker made (a quorum queue's delivery limit) carries only
        // `x-death`: it explains what the `x-wallet-*` headers would have.
        let death = BrokerDeath::of(&properties);
        let death = death.as_ref();
        Self {
            position,
            message_id,
            routing_key: headers::text(&properties, ORIGINAL_ROUTING_KEY)
                .or_else(|| death.and_then(|d| d.routing_key.clone()))
                .or_else(|| envelope_type(&body)),
            error: headers::text(&properties, ERROR).or_else(|| death.map(|d| d.reason.clone())),
            error_detail: headers::text(&properties, ERROR_DETAIL)
                .or_else(|| death.map(BrokerDeath::detail)),
            attempts: headers::integer(&properties, ATTEMPTS)
                .or_else(|| death.and_then(|d| d.attempts)),
            dead_lettered_at: headers::text(&properties, DEAD_LETTERED_AT)
                .or_else(|| death.and_then(|d| d.at.clone())),
            properties,
            body,
        }
    }

    /// When it was dead-lettered, if its header says so in RFC 3339.
    pub fn dead_lettered_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let at = self.dead_lettered_at.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The body byte for byte, as a replay republishes it. May hold payment tokens:
    /// never log it, show [`Self::display_body`] instead.
    pub fn raw_body(&self) -> &[u8] {
        &self.body
    }

    pub fn body_size(&self) -> usize {
        self.body.len()
    }

    /// The body for people and scripts, secrets masked; JSON pretty-printed if `pretty`.
    pub fn display_body(&self, pretty: bool) -> DisplayBody {
        let masked = redact(&self.body);
        match String::from_utf8(masked) {
            Ok(text) if pretty => match serde_json::from_str::<Value>(&text) {
                Ok(doc) => DisplayBody::Text(serde_json::to_string_pretty(&doc).unwrap_or(text)),
                Err(_) => DisplayBody::Text(text),
            },
            Ok(text) => DisplayBody::Text(text),
            Err(err) => DisplayBody::Base64(BASE64_STANDARD.encode(err.into_bytes())),
        }
    }

    /// Every header, its value as text (tables and arrays as JSON).
    pub fn headers(&self) -> BTreeMap<String, String> {
        let Some(table) = self.properties.headers().as_ref() else {
            return BTreeMap::new();
        };
        table
            .inner()
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value_text(value)))
            .collect()
    }

    /// The properties that are set, other than headers, as text.
    pub fn property_texts(&self) -> BTreeMap<&'static str, String> {
        let p = &self.properties;
        let text =
            |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
        let timestamp = p.timestamp().map(|t| {
            match i64::try_from(t)
                .ok()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
            {
                Some(at) => at.to_rfc3339(),
                None => t.to_string(),
            }
        });
        [
            ("content_type", text(p.content_type())),
            ("content_encoding", text(p.content_encoding())),
            ("delivery_mode", p.delivery_mode().map(|m| m.to_string())),
            ("priority", p.priority().map(|m| m.to_string())),
            ("correlation_id", text(p.correlation_id())),
            ("reply_to", text(p.reply_to())),
            ("expiration", text(p.expiration())),
            ("message_id", text(p.message_id())),
            ("timestamp", timestamp),
            ("type", text(p.kind())),
            ("user_id", text(p.user_id())),
            ("app_id", text(p.app_id())),
            ("cluster_id", text(p.cluster_id())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| (name, value)))
        .collect()
    }

    /// The `--json` shape: the summary fields, `properties`, `headers`, and `body`
    /// (UTF-8 text) or `body_base64`.
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "position": self.position,
            "message_id": self.message_id,
            "routing_key": self.routing_key,
            "error": self.error,
            "error_detail": self.error_detail,
            "attempts": self.attempts,
            "dead_lettered_at": self.dead_lettered_at,
            "body_size": self.body_size(),
            "properties": self.property_texts(),
            "headers": self.headers(),
        });
        let (key, body) = match self.display_body(false) {
            DisplayBody::Text(text) => ("body", text),
            DisplayBody::Base64(encoded) => ("body_base64", encoded),
        };
        out[key] = Value::String(body);
        out
    }
}

impl fmt::Debug for DeadLetterEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterEntry")
            .field("position", &self.position)
            .field("message_id", &self.message_id)
            .field("routing_key", &self.routing_key)
            .field("error", &self.error)
            .field("attempts", &self.attempts)
            .field("body_size", &self.body_size())
            .finish_non_exhaustive()
    }
}

/// The broker's own account of a dead-lettering: the latest `x-death` entry.
#[derive(Debug, Clone)]
struct BrokerDeath {
    /// `delivery_limit`, `rejected`, `expired` or `maxlen`.
    reason: String,
    queue: Option<String>,
    /// The first of `routing-keys` that is not the queue's own name (a message back
    /// from a retry queue was routed by queue name).
    routing_key: Option<String>,
    /// `x-delivery-count` + 1 (deliveries made) when the broker kept it, else `count`
    /// (times dead-lettered): RabbitMQ 3.10 drops the delivery count on dead-lettering.
    attempts: Option<i64>,
    at: Option<String>,
}

impl BrokerDeath {
    fn of(properties: &BasicProperties) -> Option<Self> {
        let table = properties.headers().as_ref()?;
        let AMQPValue::FieldArray(deaths) = table.inner().get("x-death")? else {
            return None;
        };
        let AMQPValue::FieldTable(death) = deaths.as_slice().first()? else {
            return None;
        };
        let field = |name: &str| death.inner().get(name);
        let text = |name: &str| match field(name) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        let queue = text("queue");
        let routing_key = match field("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys
                .as_slice()
                .iter()
                .filter_map(|key| match value_json(key) {
                    Value::String(key) => Some(key),
                    _ => None,
                })
                .find(|key| Some(key) != queue.as_ref()),
            _ => None,
        };
        let delivery_count = headers::integer(properties, "x-delivery-count").map(|n| n + 1);
        let count = field("count").and_then(|v| value_json(v).as_i64());
        let at = match field("time") {
            Some(AMQPValue::Timestamp(t)) => i64::try_from(*t)
                .ok()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            _ => None,
        };
        Some(Self {
            reason: text("reason")?,
            queue,
            routing_key,
            attempts: delivery_count.or(count),
            at,
        })
    }

    fn detail(&self) -> String {
        let queue = self.queue.as_deref().unwrap_or("its queue");
        format!("dead-lettered by the broker from {queue} ({})", self.reason)
    }
}

/// The envelope `type`, for dead letters that lost (or never had) the routing-key header.
fn envelope_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<TypeOnly>(body)
        .ok()
        .map(|t| t.kind)
}

fn value_text(value: &AMQPValue) -> String {
    match value_json(value) {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

fn value_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(v) => json!(v),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(d.scale.into())),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(value_json).collect())
        }
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
                .collect::<Map<_, _>>(),
        ),
        AMQPValue::ByteArray(bytes) => json!(BASE64_STANDARD.encode(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}
