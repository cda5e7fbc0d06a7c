//! One message as a load test publishes it: the bytes, the AMQP properties a real
//! order pipeline would set, and whether the worker answers it with an event.

use lapin::BasicProperties;
use serde_json::{Value, json};

/// A message ready to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Envelope `id`, AMQP `message_id`, and what the completion's `causation_id` names.
    pub id: String,
    /// Position in the run's publish order (0 for messages built by hand): tells
    /// which messages went out before an answered one.
    pub seq: u64,
    pub routing_key: String,
    pub correlation_id: String,
    pub body: Vec<u8>,
    /// Whether the worker answers with a completion event (`wallet.*`); a placed
    /// order without the save flag is recorded silently.
    pub expects_event: bool,
}

impl Message {
    /// A JSON envelope (docs/interface.md, message envelope) of type `kind`, published with routing key `kind`.
    pub fn envelope(
        id: &str,
        kind: &str,
        correlation_id: &str,
        data: Value,
        expects_event: bool,
    ) -> Self {
        let envelope = json!({
            "id": id,
            "type": kind,
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "correlation_id": correlation_id,
            "data": data,
        });
        Self {
            id: id.to_owned(),
            seq: 0,
            routing_key: kind.to_owned(),
            correlation_id: correlation_id.to_owned(),
            body: serde_json::to_vec(&envelope).expect("a JSON value always serializes"),
            expects_event,
        }
    }

    /// Bytes that are not a valid message, with proper properties: the worker
    /// dead-letters it as `malformed` and answers nothing.
    pub fn malformed(id: &str, routing_key: &str, body: &[u8]) -> Self {
        Self {
            id: id.to_owned(),
            seq: 0,
            routing_key: routing_key.to_owned(),
            correlation_id: format!("corr_{id}"),
            body: body.to_vec(),
            expects_event: false,
        }
    }

    /// Persistent JSON with `message_id` = `id` and the correlation id, as pipelines
    /// publish (docs/interface.md, message envelope).
    pub fn properties(&self) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(self.id.as_str().into())
            .with_correlation_id(self.correlation_id.as_str().into())
            .with_type(self.routing_key.as_str().into())
            .with_app_id("wallet-worker loadgen".into())
            .with_timestamp(
                chrono::Utc::now()
                    .timestamp()
                    .try_into()
                    .unwrap_or_default(),
            )
    }
}
