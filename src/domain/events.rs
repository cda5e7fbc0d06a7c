//! Outbound events (docs/messages.md, events) and their envelope (docs/interface.md, message envelope).

use super::envelope::Meta;
use super::ids::{CustomerId, GatewayId, OrderId, SourceId};
use super::secret::Secret;
use super::trace::TraceContext;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// The events the worker publishes: each is a routing key and envelope `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Saved,
    SaveFailed,
    Attached,
    AttachRejected,
    Removed,
    RemoveRejected,
    DefaultSet,
    DefaultRejected,
    DeadLettered,
}

impl EventType {
    /// Every event type, in the order docs/messages.md lists them.
    pub const ALL: [EventType; 9] = [
        Self::Saved,
        Self::SaveFailed,
        Self::Attached,
        Self::AttachRejected,
        Self::Removed,
        Self::RemoveRejected,
        Self::DefaultSet,
        Self::DefaultRejected,
        Self::DeadLettered,
    ];

    /// The routing key and envelope `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Saved => "wallet.saved",
            Self::SaveFailed => "wallet.save_failed",
            Self::Attached => "wallet.attached",
            Self::AttachRejected => "wallet.attach_rejected",
            Self::Removed => "wallet.removed",
            Self::RemoveRejected => "wallet.remove_rejected",
            Self::DefaultSet => "wallet.default_set",
            Self::DefaultRejected => "wallet.default_rejected",
            Self::DeadLettered => "wallet.dead_lettered",
        }
    }
}

/// An event payload: its type says which routing key it is published under, so a key
/// and its payload cannot disagree.
pub trait Event: Serialize {
    /// The routing key and envelope `type` of this payload.
    fn event_type(&self) -> EventType;
}

/// Payloads published under one routing key only.
macro_rules! event {
    ($($payload:ty => $kind:ident),* $(,)?) => {
        $(impl Event for $payload {
            fn event_type(&self) -> EventType {
                EventType::$kind
            }
        })*
    };
}

event! {
    WalletSaved => Saved,
    WalletSaveFailed => SaveFailed,
    WalletAttached => Attached,
    WalletAttachRejected => AttachRejected,
    WalletRemoved => Removed,
    WalletDefaultSet => DefaultSet,
    DeadLettered => DeadLettered,
}

impl Event for WalletChangeRejected {
    fn event_type(&self) -> EventType {
        match self.change {
            WalletChange::Remove => EventType::RemoveRejected,
            WalletChange::SetDefault => EventType::DefaultRejected,
        }
    }
}

/// What a committed message did, for the `outcome` metric label: the event it caused
/// last, or only recording an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Recorded an order, and published nothing.
    Recorded,
    /// Published (last) this event.
    Published(EventType),
}

impl Outcome {
    /// The outcome of a message that caused `events`.
    pub fn of(events: &[OutboundEvent]) -> Self {
        events
            .last()
            .map_or(Self::Recorded, |event| Self::Published(event.kind))
    }

    /// The metric label: `recorded`, `saved`, `attach_rejected`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::Published(kind) => match kind {
                EventType::Saved => "saved",
                EventType::SaveFailed => "save_failed",
                EventType::Attached => "attached",
                EventType::AttachRejected => "attach_rejected",
                EventType::Removed => "removed",
                EventType::RemoveRejected => "remove_rejected",
                EventType::DefaultSet => "default_set",
                EventType::DefaultRejected => "default_rejected",
                EventType::DeadLettered => "dead_lettered",
            },
        }
    }
}

/// An event ready for the outbox: its type (the routing key) and its full JSON envelope.
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    pub id: String,
    pub kind: EventType,
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

impl OutboundEvent {
    /// The routing key it is published under (its envelope `type`).
    pub fn routing_key(&self) -> &'static str {
        self.kind.as_str()
    }
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
    pub id: SourceId,
    pub gateway_id: GatewayId,
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
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub customer_payment_source: SourceSummary,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletSaveFailed {
    pub order_id: OrderId,
    pub customer_id: Option<CustomerId>,
    pub reason: SaveFailure,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletAttached {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
    pub payment_source: AttachedPaymentSource,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachedPaymentSource {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub gateway_id: GatewayId,
    pub customer_token: Secret,
    pub payment_source_token: Secret,
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletAttachRejected {
    pub order_id: OrderId,
    pub customer_payment_source_id: SourceId,
    pub reason: AttachRejection,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletRemoved {
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
    /// The customer's default after the removal, if any source is left available.
    pub default_customer_payment_source_id: Option<SourceId>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WalletDefaultSet {
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
}

/// `wallet.remove_rejected` and `wallet.default_rejected`.
#[derive(Debug, Clone, Serialize)]
pub struct WalletChangeRejected {
    /// Which change was refused: the routing key, not a field of the payload.
    #[serde(skip)]
    pub change: WalletChange,
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
    pub reason: WalletRejection,
}

/// A change to a customer's wallet that can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletChange {
    /// `wallet.remove`, refused as `wallet.remove_rejected`.
    Remove,
    /// `wallet.set_default`, refused as `wallet.default_rejected`.
    SetDefault,
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

/// Builds the envelope for `data`, caused by the inbound message `cause`, under the
/// routing key its type names.
pub fn outbound<'a, T: Event>(cause: impl Into<Cause<'a>>, data: T) -> OutboundEvent {
    let cause = cause.into();
    let kind = data.event_type();
    let id = super::ids::event_id();
    let body = serde_json::to_vec(&Envelope {
        id: &id,
        kind: kind.as_str(),
        occurred_at: Utc::now(),
        correlation_id: cause.correlation_id,
        causation_id: cause.id,
        data,
    })
    .expect("event payloads are plain data and always serialize");
    OutboundEvent {
        id,
        kind,
        correlation_id: cause.correlation_id.map(str::to_owned),
        causation_id: cause.id.map(str::to_owned),
        body,
        trace: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event: &OutboundEvent) -> Value {
        serde_json::from_slice(&event.body).unwrap()
    }

    #[test]
    fn an_event_is_published_under_the_key_its_payload_names() {
        let cause = Cause {
            id: Some("m1"),
            correlation_id: None,
        };
        for change in [WalletChange::Remove, WalletChange::SetDefault] {
            let event = outbound(
                cause,
                WalletChangeRejected {
                    change,
                    customer_id: CustomerId::stored("c".into()),
                    customer_payment_source_id: SourceId::stored("s".into()),
                    reason: WalletRejection::NotFound,
                },
            );
            let body = envelope(&event);
            assert_eq!(body["type"], event.routing_key());
            assert_eq!(
                body["data"],
                serde_json::json!({"customer_id": "c", "customer_payment_source_id": "s", "reason": "not_found"})
            );
        }
        let event = outbound(
            cause,
            WalletDefaultSet {
                customer_id: CustomerId::stored("c".into()),
                customer_payment_source_id: SourceId::stored("s".into()),
            },
        );
        assert_eq!(event.routing_key(), "wallet.default_set");
        assert_eq!(envelope(&event)["type"], "wallet.default_set");
    }

    #[test]
    fn the_outcome_is_named_by_the_last_event() {
        assert_eq!(Outcome::of(&[]).as_str(), "recorded");
        for kind in EventType::ALL {
            let label = Outcome::Published(kind).as_str();
            assert_eq!(format!("wallet.{label}"), kind.as_str());
        }
    }
}
