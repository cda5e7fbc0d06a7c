//! What a message changes, as data the committer executes inside its transaction.
//!
//! Every decision that depends on stored state is taken here, under the row locks of
//! the commit: whether the order is still editable, whether the source exists, belongs
//! to the customer and is available, whether the gateway is enabled, whether the
//! wallet is full, which source is the default. A concurrent change between a
//! handler's reads and the commit therefore turns into the matching rejection, never
//! into an event that disagrees with the committed rows.

use super::{orders, wallet};
use crate::domain::events::{
    self, AttachRejection, AttachedPaymentSource, OutboundEvent, SaveFailure, WalletAttachRejected,
    WalletAttached, WalletChangeRejected, WalletDefaultSet, WalletRejection, WalletRemoved,
    WalletSaveFailed, WalletSaved,
};
use crate::domain::{Clock, Meta, Order, Secret, SourceRef, WalletAttach, expiry};
use serde_json::{Map, Value};
use sqlx::PgConnection;

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

/// A payment source the gateway made reusable, to be stored for the order's customer.
#[derive(Debug)]
pub struct SaveSource {
    pub order_id: String,
    pub customer_id: String,
    pub gateway_id: String,
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
                Effect::SaveSource(save) => Some(save.customer_id.as_str()),
                Effect::Attach(attach) => Some(attach.customer_id.as_str()),
                Effect::Remove(source) | Effect::SetDefault(source) => {
                    Some(source.customer_id.as_str())
                }
                Effect::Emit(_) => None,
            })
            .unwrap_or("")
    }
}

/// The wallet rules' settings.
#[derive(Debug, Clone)]
pub struct Rules {
    pub clock: Clock,
    /// Unexpired sources one customer may hold.
    pub max_sources_per_customer: i64,
}

/// Applies `change` on the transaction `conn`; returns the events it causes.
pub async fn apply(
    conn: &mut PgConnection,
    rules: &Rules,
    change: &Change,
) -> sqlx::Result<Vec<OutboundEvent>> {
    let cause = &change.cause;
    let mut out = Vec::new();
    for effect in &change.effects {
        let event = match effect {
            Effect::RecordPlaced(order) => {
                orders::record_placed(conn, order).await?;
                continue;
            }
            Effect::SaveSource(save) => save_source(conn, rules, cause, save).await?,
            Effect::Attach(attach) => attach_source(conn, rules, cause, attach).await?,
            Effect::Remove(source) => remove_source(conn, rules, cause, source).await?,
            Effect::SetDefault(source) => set_default(conn, rules, cause, source).await?,
            Effect::Emit(event) => event.clone(),
        };
        out.push(event);
    }
    Ok(out)
}

/// The label of what a message did, for metrics: its last event's name (`saved`,
/// `attach_rejected`, ...), or `recorded` when it only recorded an order.
pub fn outcome(events: &[OutboundEvent]) -> &'static str {
    events.last().map_or("recorded", |e| {
        e.routing_key
            .strip_prefix("wallet.")
            .unwrap_or(e.routing_key)
    })
}

async fn save_source(
    conn: &mut PgConnection,
    rules: &Rules,
    cause: &Meta,
    save: &SaveSource,
) -> sqlx::Result<OutboundEvent> {
    let now = rules.clock.now();
    let source = wallet::NewSource {
        customer_id: &save.customer_id,
        gateway_id: &save.gateway_id,
        name: &save.name,
        metadata: &save.metadata,
        reference: &save.reference,
        customer_token: &save.customer_token,
        payment_source_token: &save.payment_source_token,
        expires_at: expiry::expires_at(&save.metadata),
    };
    wallet::lock_customer(conn, &save.customer_id, true).await?;
    let state = wallet::save_state(conn, &source, now).await?;
    let refuse = |reason, message: String| {
        events::outbound(
            cause,
            "wallet.save_failed",
            WalletSaveFailed {
                order_id: save.order_id.clone(),
                customer_id: Some(save.customer_id.clone()),
                reason,
                message,
            },
        )
    };
    match state.gateway_enabled {
        None => {
            let message = format!("gateway {} was removed", save.gateway_id);
            return Ok(refuse(SaveFailure::UnknownGateway, message));
        }
        Some(false) => {
            let message = format!("gateway {} is disabled", save.gateway_id);
            return Ok(refuse(SaveFailure::GatewayDisabled, message));
        }
        Some(true) => {}
    }
    let (mut summary, created) = match state.existing {
        Some(existing) => (existing, false),
        None if state.held >= rules.max_sources_per_customer => {
            let message = format!(
                "the wallet already holds {} unexpired payment sources, the most allowed",
                state.held
            );
            return Ok(refuse(SaveFailure::WalletFull, message));
        }
        None => {
            // Record the default as it stands before the new source arrives: when the
            // chosen one expired or lost its gateway, the most recently saved of the
            // sources already held took over, not the newcomer.
            wallet::settle_default(conn, &save.customer_id, now).await?;
            (wallet::insert(conn, &source).await?, true)
        }
    };
    let default = wallet::settle_default(conn, &save.customer_id, now).await?;
    summary.default = default.as_deref() == Some(summary.id.as_str());
    Ok(events::outbound(
        cause,
        "wallet.saved",
        WalletSaved {
            order_id: save.order_id.clone(),
            customer_id: save.customer_id.clone(),
            customer_payment_source: summary,
            created,
        },
    ))
}

async fn attach_source(
    conn: &mut PgConnection,
    rules: &Rules,
    cause: &Meta,
    attach: &WalletAttach,
) -> sqlx::Result<OutboundEvent> {
    let reject = |reason| {
        events::outbound(
            cause,
            "wallet.attach_rejected",
            WalletAttachRejected {
                order_id: attach.order_id.clone(),
                customer_payment_source_id: attach.customer_payment_source_id.clone(),
                reason,
            },
        )
    };
    if !attach.order_status.is_editable() {
        return Ok(reject(AttachRejection::OrderNotEditable));
    }
    // Customer first, as every wallet writer does (see `Change::lock_key`).
    wallet::lock_customer(conn, &attach.customer_id, false).await?;
    // Unknown and foreign sources look the same: existence is not revealed.
    let Some(source) = wallet::find_owned(
        conn,
        &attach.customer_payment_source_id,
        &attach.customer_id,
    )
    .await?
    else {
        return Ok(reject(AttachRejection::NotFound));
    };
    if !source.gateway_enabled {
        return Ok(reject(AttachRejection::GatewayDisabled));
    }
    if expiry::is_expired(source.expires_at, rules.clock.now()) {
        return Ok(reject(AttachRejection::Expired));
    }
    let recorded = orders::record_attachment(
        conn,
        &attach.order_id,
        &source.customer_id,
        &attach.order_status,
        &source.id,
    )
    .await?;
    if !recorded {
        return Ok(reject(AttachRejection::OrderNotEditable));
    }
    Ok(events::outbound(
        cause,
        "wallet.attached",
        WalletAttached {
            order_id: attach.order_id.clone(),
            customer_id: attach.customer_id.clone(),
            customer_payment_source_id: source.id,
            payment_source: AttachedPaymentSource {
                kind: "external_payments",
                gateway_id: source.gateway_id,
                customer_token: source.customer_token,
                payment_source_token: source.payment_source_token,
                metadata: source.metadata,
            },
        },
    ))
}

async fn remove_source(
    conn: &mut PgConnection,
    rules: &Rules,
    cause: &Meta,
    target: &SourceRef,
) -> sqlx::Result<OutboundEvent> {
    let customer_id = &target.customer_id;
    let source_id = &target.customer_payment_source_id;
    wallet::lock_customer(conn, customer_id, true).await?;
    if !wallet::remove(conn, source_id, customer_id).await? {
        return Ok(rejected(
            cause,
            "wallet.remove_rejected",
            target,
            WalletRejection::NotFound,
        ));
    }
    let default = wallet::settle_default(conn, customer_id, rules.clock.now()).await?;
    Ok(events::outbound(
        cause,
        "wallet.removed",
        WalletRemoved {
            customer_id: customer_id.clone(),
            customer_payment_source_id: source_id.clone(),
            default_customer_payment_source_id: default,
        },
    ))
}

async fn set_default(
    conn: &mut PgConnection,
    rules: &Rules,
    cause: &Meta,
    target: &SourceRef,
) -> sqlx::Result<OutboundEvent> {
    let customer_id = &target.customer_id;
    let source_id = &target.customer_payment_source_id;
    let reject = |reason| rejected(cause, "wallet.default_rejected", target, reason);
    wallet::lock_customer(conn, customer_id, true).await?;
    // A source whose gateway is disabled or removed cannot be the default either; the
    // contract's reasons are `not_found` and `expired`, and it is not available.
    let source = wallet::find_owned(conn, source_id, customer_id).await?;
    let Some(source) = source.filter(|s| s.gateway_enabled) else {
        return Ok(reject(WalletRejection::NotFound));
    };
    if expiry::is_expired(source.expires_at, rules.clock.now()) {
        return Ok(reject(WalletRejection::Expired));
    }
    wallet::choose_default(conn, customer_id, source_id).await?;
    Ok(events::outbound(
        cause,
        "wallet.default_set",
        WalletDefaultSet {
            customer_id: customer_id.clone(),
            customer_payment_source_id: source_id.clone(),
        },
    ))
}

fn rejected(
    cause: &Meta,
    routing_key: &'static str,
    target: &SourceRef,
    reason: WalletRejection,
) -> OutboundEvent {
    events::outbound(
        cause,
        routing_key,
        WalletChangeRejected {
            customer_id: target.customer_id.clone(),
            customer_payment_source_id: target.customer_payment_source_id.clone(),
            reason,
        },
    )
}
