//! Outbound events (docs/messages.md, events) and their envelope (docs/interface.md, message envelope).

use super::envelope::Meta;
use super::secret::Secret;
use super::trace::TraceContext;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// An event ready for the outbox: its routing key and its full JSON envelope.
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    pub id: String,
    pub routing_key: &'static str,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    /// The serialized envelope; may hold tokens (`wallet.attached`), so it is never logged.
    pub body: Vec<u8>,
    /// The trace of the work that caused it, sent on as `traceparent` / `tracestate`
    /// headers. Filled in by whoever knows that work (the committer, the dead-letter
    /// path); [`outbound`] is pure and leaves it empty.
    pub trace: Option<TraceContext>,
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    /// Null only for `wallet.dead_lettered` of a message without an id.
    causation_id: Option<&'a str>,
    data: T,
}

/// What caused an event: the inbound message's id and correlation id.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    pub id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
}

impl<'a> From<&'a Meta> for Cause<'a> {
    fn from(meta: &'a Meta) -> Self {
        Self {
            id: Some(&meta.id),
            correlation_id: meta.correlation_id.as_deref(),
        }
    }
}

/// A customer payment source as events show it: never a token.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceSummary {
    pub id: String,
    pub gateway_id: String,
    pub name: String,
    pub metadata: Map<String, Value>,
    /// Whether it is the customer's default source once the save committed.
    pub default: bool,
}

/// Why a save was refused (docs/messages.md, events).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SaveFailure {
    GuestCustomer,
    UnknownGateway,
    GatewayRefused,
    UnsupportedPaymentSource,
    GatewayDisabled,
    WalletFull,
}

/// Why an attach was refused (docs/messages.md, events).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttachRejection {
    NotFound,
    OrderNotEditable,
    GatewayDisabled,
    Expired,
}

/// Why a removal or a default change was refused (docs/messages.md, events).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WalletRejection {
    /// Unknown, or another customer's (existence is not revealed).
    NotFound,
    Expired,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletSaved {
    pub order_id: String,
    pub customer_id: String,
    pub customer_payment_source: SourceSummary,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletSaveFailed {
    pub order_id: String,
    pub customer_id: Option<String>,
    pub reason: SaveFailure,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletAttached {
    pub order_id: String,
    pub customer_id: String,
    pub customer_payment_source_id: String,
    pub payment_source: AttachedPaymentSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachedPaymentSource {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub gateway_id: String,
    pub customer_token: Secret,
    pub payment_source_token: Secret,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletAttachRejected {
    pub order_id: String,
    pub customer_payment_source_id: String,
    pub reason: AttachRejection,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletRemoved {
    pub customer_id: String,
    pub customer_payment_source_id: String,
    /// The customer's default after the removal, if any source is left available.
    pub default_customer_payment_source_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletDefaultSet {
    pub customer_id: String,
    pub customer_payment_source_id: String,
}

/// `wallet.remove_rejected` and `wallet.default_rejected`.
#[derive(Debug, Clone, Serialize)]
pub struct WalletChangeRejected {
    pub customer_id: String,
    pub customer_payment_source_id: String,
    pub reason: WalletRejection,
}

/// `wallet.dead_lettered`: a message ended in the dead-letter queue.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLettered {
    pub message_id: Option<String>,
    pub message_type: String,
    pub error: String,
    pub detail: String,
    pub attempts: u32,
    pub order_id: Option<String>,
}

/// Builds the envelope for `data`, caused by the inbound message `cause`.
pub fn outbound<'a, T: Serialize>(
    cause: impl Into<Cause<'a>>,
    routing_key: &'static str,
    data: T,
) -> OutboundEvent {
    let cause = cause.into();
    let id = super::ids::event_id();
    let body = serde_json::to_vec(&Envelope {
        id: &id,
        kind: routing_key,
        occurred_at: Utc::now(),
        correlation_id: cause.correlation_id,
        causation_id: cause.id,
        data,
    })
    .expect("event payloads are plain data and always serialize");
    OutboundEvent {
        id,
        routing_key,
        correlation_id: cause.correlation_id.map(str::to_owned),
        causation_id: cause.id.map(str::to_owned),
        body,
        trace: None,
    }
}
