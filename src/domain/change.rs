//! What a message changes, as data: a handler returns a [`Change`] (its [`Effect`]s),
//! the store executes it inside the commit's transaction, and the commit rules
//! ([`super::commit_rules`]) decide each effect's event against the locked rows.

use super::events::OutboundEvent;
use super::ids::{CustomerId, GatewayId, OrderId};
use super::{Meta, Order, Secret, SourceRef, WalletAttach};
use serde_json::{Map, Value};

/// One write a message asks for.
#[derive(Debug)]
pub enum Effect {
    /// Record a placed order and its customer.
    RecordPlaced(Order),
    /// Store the source the gateway returned (or find it already stored).
    SaveSource(SaveSource),
    /// Attach a stored source to an order in checkout.
    Attach(WalletAttach),
    /// Remove a source from its customer's wallet.
    Remove(SourceRef),
    /// Make a source its customer's default.
    SetDefault(SourceRef),
    /// Publish an event decided before the commit (a refusal that depends on nothing
    /// stored, such as a guest order).
    Emit(OutboundEvent),
}

impl Effect {
    /// The customer whose wallet this effect reads or changes.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            Effect::SaveSource(save) => Some(&save.customer_id),
            Effect::Attach(attach) => Some(&attach.customer_id),
            Effect::Remove(target) | Effect::SetDefault(target) => Some(&target.customer_id),
            Effect::RecordPlaced(_) | Effect::Emit(_) => None,
        }
    }
}

/// A payment source the gateway made reusable, to be stored for the order's customer.
#[derive(Debug)]
pub struct SaveSource {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub gateway_id: GatewayId,
    pub name: String,
    pub metadata: Map<String, Value>,
    /// The order payment source it was saved from.
    pub reference: String,
    pub customer_token: Secret,
    pub payment_source_token: Secret,
}

/// The changes of one inbound message.
#[derive(Debug)]
pub struct Change {
    /// The message, for the events' `causation_id` and `correlation_id`.
    pub cause: Meta,
    pub effects: Vec<Effect>,
}

impl Change {
    pub fn new(cause: &Meta, effects: Vec<Effect>) -> Self {
        Self {
            cause: cause.clone(),
            effects,
        }
    }

    /// The customer whose rows this change locks. Batches apply changes in this order,
    /// so two transactions — of this worker or another — take customer locks in the
    /// same order and cannot deadlock on them.
    pub fn lock_key(&self) -> &str {
        self.effects
            .iter()
            .find_map(|effect| match effect {
                Effect::RecordPlaced(order) => order.customer.as_ref().map(|c| c.id.as_str()),
                other => other.customer_id(),
            })
            .unwrap_or("")
    }
}
