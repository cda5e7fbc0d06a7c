//! Domain types: the worker's vocabulary (ids, message types, error kinds, events and
//! their routing keys, a gateway's circuit state), secrets, limits, the envelope, the
//! typed commands, what a message changes, the wallet rules and the rules a commit
//! applies to a batch, and what a dead letter is (its failure group, its
//! masked form). Pure: no I/O, and nothing from the rest of the crate (ids only know
//! how sqlx stores text).

pub mod change;
pub mod circuit;
pub mod clock;
pub mod commands;
pub mod commit_rules;
pub mod dead_letter;
pub mod envelope;
pub mod error_kind;
pub mod events;
pub mod expiry;
pub mod failure_group;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ids;
pub mod limits;
pub mod message_type;
pub mod redact;
pub mod rejection;
pub mod secret;
pub mod trace;
pub mod wallet;

pub use change::{Change, Effect, SaveSource};
pub use circuit::CircuitState;
pub use clock::Clock;
pub use commands::{
    Command, Customer, ExternalPayment, Order, OrderPlaced, OrderStatus, PaymentSource, SourceRef,
    WalletAttach, WalletSave,
};
pub use envelope::{Inbound, Meta, RawMessage, Rejection, parse};
pub use error_kind::ErrorKind;
pub use ids::{CustomerId, GatewayId, MessageId, OrderId, SourceId};
pub use message_type::MessageType;
pub use secret::Secret;
pub use trace::TraceContext;
