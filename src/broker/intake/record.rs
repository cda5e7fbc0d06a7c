//! One message of the intake queue as a row of the dead-letter store, whoever put it
//! there: the worker (the `x-wallet-*` headers say why), the broker (only `x-death`:
//! a quorum queue's delivery limit, a TTL, a length limit) or another producer (none of
//! them: error kind `unknown`). Never fails: what cannot be read is left empty.

use crate::broker::amqp_json::{self, without_nul};
use crate::broker::headers::{
    self, ATTEMPTS, DEAD_LETTERED_AT, ERROR, ERROR_DETAIL, ORIGINAL_ROUTING_KEY, REPLAYED_AT,
};
use crate::domain::dead_letter::{self, Sniffed, UNKNOWN_ERROR};
use crate::domain::failure_group;
use crate::store::dead_letters::NewDeadLetter;
use crate::telemetry::propagation;
use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

/// Characters of a detail kept at most.
const MAX_DETAIL_CHARS: usize = 2000;

/// The dead letter `body` + `properties` as the store keeps it; `now` is when it was
/// read, its time when nothing else tells.
pub fn record(body: Vec<u8>, properties: &BasicProperties, now: DateTime<Utc>) -> NewDeadLetter {
    let sniffed = Sniffed::of(&body);
    let death = BrokerDeath::of(properties);
    let text = |name| headers::text(properties, name).map(|t| without_nul(&t));
    let message_id = message_id(properties, &sniffed);
    let routing_key = text(ORIGINAL_ROUTING_KEY)
        .or_else(|| death.as_ref().and_then(|d| d.routing_key.clone()))
        .or_else(|| sniffed.kind.clone())
        .map(|key| routing_key_bound(&key))
        .filter(|key| !key.is_empty());
    let error = match (text(ERROR), &death) {
        (Some(kind), _) => dead_letter::error_kind(&kind),
        (None, Some(death)) => dead_letter::error_kind(&death.reason),
        (None, None) => UNKNOWN_ERROR.to_owned(),
    };
    let detail = text(ERROR_DETAIL)
        .or_else(|| death.as_ref().map(BrokerDeath::detail))
        .unwrap_or_else(|| "published to the dead-letter queue without x-wallet-* headers".into())
        .chars()
        .take(MAX_DETAIL_CHARS)
        .collect::<String>();
    let attempts = headers::integer(properties, ATTEMPTS)
        .or_else(|| death.as_ref().and_then(|d| d.attempts))
        .map(|n| i32::try_from(n.max(0)).unwrap_or(i32::MAX));
    let dead_lettered_at = text(DEAD_LETTERED_AT)
        .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| death.as_ref().and_then(|d| d.at))
        .unwrap_or(now);
    let dedupe_key = dead_letter::dedupe_key(
        message_id.as_deref(),
        &body,
        routing_key.as_deref(),
        text(REPLAYED_AT).as_deref(),
    );
    NewDeadLetter {
        dedupe_key,
        group: failure_group::of(&error, routing_key.as_deref(), &detail),
        correlation_id: correlation_id(properties, &sniffed),
        message_id,
        routing_key,
        error,
        detail,
        attempts,
        order_id: sniffed.order_id,
        customer_id: sniffed.customer_id,
        dead_lettered_at,
        properties: amqp_json::properties_to_json(properties),
        headers: amqp_json::headers_to_json(properties.headers().as_ref()),
        trace: trace(properties),
        body,
    }
}

/// The message's own id, else the one its body names.
fn message_id(properties: &BasicProperties, sniffed: &Sniffed) -> Option<String> {
    properties
        .message_id()
        .as_ref()
        .map(|id| without_nul(id.as_str()))
        .filter(|id| !id.is_empty())
        .or_else(|| sniffed.id.clone())
}

/// The correlation id its body names, else the message's own.
fn correlation_id(properties: &BasicProperties, sniffed: &Sniffed) -> Option<String> {
    sniffed.correlation_id.clone().or_else(|| {
        let property = properties.correlation_id().as_ref()?;
        Some(without_nul(property.as_str())).filter(|c| !c.is_empty())
    })
}

/// A routing key within AMQP's 255 bytes (the store indexes it; a producer's header may
/// be longer, and could then never be replayed anyway).
fn routing_key_bound(key: &str) -> String {
    let mut end = key.len().min(255);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key[..end].to_owned()
}

/// The message's trace context, when its headers hold a valid one.
fn trace(properties: &BasicProperties) -> Option<crate::domain::TraceContext> {
    let carried = headers::trace_context(properties)?;
    propagation::inject(&propagation::extract(Some(&carried)))
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
    at: Option<DateTime<Utc>>,
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
        let queue = string(death, "queue");
        let routing_key = match death.inner().get("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys
                .as_slice()
                .iter()
                .filter_map(value_string)
                .find(|key| Some(key) != queue.as_ref()),
            _ => None,
        };
        let count = match death.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => Some(*n),
            Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
            _ => None,
        };
        let at = match death.inner().get("time") {
            Some(AMQPValue::Timestamp(t)) => i64::try_from(*t)
                .ok()
                .and_then(|t| DateTime::from_timestamp(t, 0)),
            _ => None,
        };
        Some(Self {
            reason: string(death, "reason")?,
            queue,
            routing_key,
            attempts: headers::integer(properties, "x-delivery-count")
                .map(|n| n + 1)
                .or(count),
            at,
        })
    }

    fn detail(&self) -> String {
        let queue = self.queue.as_deref().unwrap_or("its queue");
        format!("dead-lettered by the broker from {queue} ({})", self.reason)
    }
}

fn string(table: &FieldTable, name: &str) -> Option<String> {
    value_string(table.inner().get(name)?)
}

fn value_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(without_nul(&String::from_utf8_lossy(s.as_bytes()))),
        AMQPValue::ShortString(s) => Some(without_nul(s.as_str())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn now() -> DateTime<Utc> {
        "2026-11-27T16:00:00Z".parse().unwrap()
    }

    #[test]
    fn the_workers_dead_letter_is_read_from_its_headers_and_body() {
        let mut table = FieldTable::default();
        for (name, value) in [
            (ERROR, "order_not_found"),
            (ERROR_DETAIL, "order o_1 has not been placed yet"),
            (ORIGINAL_ROUTING_KEY, "wallet.save"),
            (DEAD_LETTERED_AT, "2026-11-27T15:00:00.250Z"),
        ] {
            table.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        table.insert(ATTEMPTS.into(), AMQPValue::LongLongInt(8));
        let body =
            br#"{"id":"m1","type":"wallet.save","correlation_id":"c1","data":{"order_id":"o_1"}}"#;
        let props = BasicProperties::default()
            .with_message_id("m1".into())
            .with_headers(table);
        let letter = record(body.to_vec(), &props, now());
        assert_eq!(letter.message_id.as_deref(), Some("m1"));
        assert_eq!(letter.routing_key.as_deref(), Some("wallet.save"));
        assert_eq!(
            (letter.error.as_str(), letter.attempts),
            ("order_not_found", Some(8))
        );
        assert_eq!(letter.order_id.as_deref(), Some("o_1"));
        assert_eq!(letter.correlation_id.as_deref(), Some("c1"));
        assert_eq!(letter.group.label, "order * has not been placed yet");
        assert_eq!(
            letter.dead_lettered_at,
            "2026-11-27T15:00:00.250Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            letter.headers["x-wallet-attempts"],
            serde_json::json!({"i64": 8})
        );
    }

    #[test]
    fn a_broker_dead_letter_is_explained_from_x_death_and_a_bare_one_is_unknown() {
        let mut death = FieldTable::default();
        death.insert(
            "reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        death.insert("queue".into(), AMQPValue::LongString("q".into()));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("time".into(), AMQPValue::Timestamp(1_764_000_000));
        let keys = vec![AMQPValue::LongString("wallet.save".into())];
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(keys)),
        );
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        let props = BasicProperties::default().with_headers(table);
        let letter = record(b"{not json".to_vec(), &props, now());
        assert_eq!(letter.error, "delivery_limit");
        assert_eq!(letter.routing_key.as_deref(), Some("wallet.save"));
        assert_eq!(letter.attempts, Some(1));
        assert!(letter.detail.contains("from q"), "{}", letter.detail);
        assert_eq!(letter.dead_lettered_at.timestamp(), 1_764_000_000);
        assert_eq!(letter.message_id, None);

        let bare = record(b"\x00\x01".to_vec(), &BasicProperties::default(), now());
        assert_eq!(
            (bare.error.as_str(), bare.routing_key),
            (UNKNOWN_ERROR, None)
        );
        assert_eq!(bare.dead_lettered_at, now());
        assert_eq!(bare.body, b"\x00\x01");
    }
}
