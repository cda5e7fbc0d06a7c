//! The `x-wallet-*` headers (docs/operations.md, failure handling), the W3C trace context
//! headers (docs/interface.md, trace context) and rebuilding properties around them.

use crate::domain::TraceContext;
use crate::domain::trace::{TRACEPARENT, TRACESTATE};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

pub const ERROR: &str = "x-wallet-error";
pub const ERROR_DETAIL: &str = "x-wallet-error-detail";
pub const ATTEMPTS: &str = "x-wallet-attempts";
pub const ORIGINAL_ROUTING_KEY: &str = "x-wallet-original-routing-key";
pub const DEAD_LETTERED_AT: &str = "x-wallet-dead-lettered-at";
/// Set by `dlq replay`: the message may have been handled before.
pub use crate::domain::dead_letter::REPLAYED_AT;
/// Times the message panicked the worker (poison detection).
pub const PANICS: &str = "x-wallet-panics";
/// Set by quorum queues: deliveries of this message that ended without a settlement.
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// A header's value as text, whatever string type the publisher used.
pub fn text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A header's value as an integer, whatever width the publisher used.
pub fn integer(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortUInt(v) => Some((*v).into()),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// The W3C trace context a message carries, when it has a `traceparent` header.
pub fn trace_context(properties: &BasicProperties) -> Option<TraceContext> {
    Some(TraceContext {
        traceparent: text(properties, TRACEPARENT)?,
        tracestate: text(properties, TRACESTATE),
    })
}

/// `properties` with `trace`'s `traceparent` (and `tracestate`) headers, when given.
pub fn with_trace(properties: BasicProperties, trace: Option<&TraceContext>) -> BasicProperties {
    let Some(trace) = trace else {
        return properties;
    };
    let changes: Vec<_> = trace
        .headers()
        .map(|(name, value)| (name, Some(long_string(value))))
        .collect();
    let headers = with_headers(&properties, &changes);
    properties.with_headers(headers)
}

pub fn long_string(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(value.into().into())
}

/// The message's headers with `changes` applied (`None` removes a header).
pub fn with_headers(
    properties: &BasicProperties,
    changes: &[(&str, Option<AMQPValue>)],
) -> FieldTable {
    let mut table = properties.headers().clone().unwrap_or_default();
    let mut inner = table.inner().clone();
    for (name, value) in changes {
        match value {
            Some(value) => {
                inner.insert(ShortString::from(*name), value.clone());
            }
            None => {
                inner.remove(*name);
            }
        }
    }
    table = FieldTable::from(inner);
    table
}

/// Copies `properties` with new headers and expiration. `user_id` is dropped: the
/// broker refuses a republish whose `user_id` is not the publishing user.
pub fn rebuild(
    properties: &BasicProperties,
    headers: FieldTable,
    expiration: Option<String>,
) -> BasicProperties {
    let mut out = BasicProperties::default().with_headers(headers);
    macro_rules! copy {
        ($get:ident, $set:ident) => {
            if let Some(value) = properties.$get().clone() {
                out = out.$set(value);
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(app_id, with_app_id);
    copy!(cluster_id, with_cluster_id);
    if let Some(expiration) = expiration {
        out = out.with_expiration(expiration.into());
    }
    out
}
