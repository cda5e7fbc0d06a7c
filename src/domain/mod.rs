//! Domain types: secrets, limits, the envelope and the typed commands. Pure: no I/O,
//! and nothing from the rest of the crate.

pub mod commands;
pub mod envelope;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod ids;
pub mod limits;
pub mod secret;

pub use commands::{
    Command, Customer, ExternalPayment, Order, OrderPlaced, PaymentSource, WalletAttach, WalletSave,
};
pub use envelope::{Inbound, Meta, RawMessage, Rejection, parse};
pub use secret::Secret;
