//! The rules a commit applies to the wallets of a batch, in memory and in message
//! order: every decision that depends on stored state is taken here, against the rows
//! the store loaded under the customers' locks — whether the order is still editable,
//! whether the source exists, belongs to the customer and is available, whether the
//! gateway is enabled, whether the wallet is full, which source is the default. A
//! concurrent change between a handler's reads and the commit therefore turns into the
//! matching rejection, never into an event that disagrees with the committed rows.
//!
//! Pure: the store loads the wallets, computes fingerprints, seals and opens tokens,
//! and writes back [`CommitRules::changes`].

use super::change::SaveSource;
use super::events::{
    self, AttachRejection, AttachedPaymentSource, OutboundEvent, SaveFailure, SourceSummary,
    WalletAttachRejected, WalletAttached, WalletChange, WalletChangeRejected, WalletDefaultSet,
    WalletRejection, WalletRemoved, WalletSaveFailed, WalletSaved,
};
use super::ids::{self, CustomerId, SourceId};
use super::wallet::{DefaultRefused, Fingerprint, Saved, Source, Wallet};
use super::{Meta, Secret, SourceRef, WalletAttach, expiry};
use chrono::{DateTime, Utc};
use std::collections::{HashMap, HashSet};

/// Where an event sits in a batch's answer: (message position, event position).
pub type Slot = (usize, usize);

/// The wallets of one commit batch while its changes are applied.
pub struct CommitRules {
    now: DateTime<Utc>,
    /// Unexpired sources one customer may hold.
    max_sources: usize,
    wallets: HashMap<String, Wallet>,
    /// What each wallet held when loaded: tells what the batch changed.
    loaded: HashMap<String, Loaded>,
    /// Whether each gateway saved to exists and is enabled (absent: removed).
    gateways: HashMap<String, bool>,
    /// Attaches that passed the wallet checks: their orders are recorded together,
    /// and those already placed become rejections.
    attachments: Vec<Pending>,
    /// When the last source of this batch was created: keeps "most recently saved"
    /// strictly ordered within a batch.
    last_created: Option<DateTime<Utc>>,
}

/// What a wallet held when the batch loaded it: enough to tell what the batch changed.
struct Loaded {
    sources: HashSet<String>,
    chosen_default: Option<String>,
}

impl From<&Wallet> for Loaded {
    fn from(wallet: &Wallet) -> Self {
        Self {
            sources: wallet.sources.iter().map(|s| s.id.to_string()).collect(),
            chosen_default: wallet.chosen_default.as_deref().map(str::to_owned),
        }
    }
}

/// An attach that passed the wallet checks, waiting for its order row.
struct Pending {
    slot: Slot,
    cause: Meta,
    attach: WalletAttach,
}

/// What a batch changed, against the wallets as loaded.
#[derive(Debug, Default)]
pub struct Changes<'a> {
    /// New sources: (customer id, source).
    pub created: Vec<(&'a str, &'a Source)>,
    /// Ids of removed sources.
    pub removed: Vec<&'a str>,
    /// Each changed customer's chosen default (`None`: the customer has none).
    pub defaults: Vec<(&'a str, Option<&'a str>)>,
    /// Orders to attach stored sources to.
    pub attachments: Vec<&'a WalletAttach>,
}

impl CommitRules {
    /// The rules over `wallets` (every wallet the batch touches, loaded under lock) and
    /// the state of the `gateways` it saves to, at `now`.
    pub fn new(
        now: DateTime<Utc>,
        max_sources: usize,
        wallets: HashMap<String, Wallet>,
        gateways: HashMap<String, bool>,
    ) -> Self {
        let loaded = wallets
            .iter()
            .map(|(customer, wallet)| (customer.clone(), Loaded::from(wallet)))
            .collect();
        Self {
            now,
            max_sources,
            wallets,
            loaded,
            gateways,
            attachments: Vec::new(),
            last_created: None,
        }
    }

    fn wallet(&mut self, customer_id: &CustomerId) -> &mut Wallet {
        self.wallets
            .get_mut(customer_id.as_str())
            .expect("every wallet of the batch is loaded")
    }

    /// `wallet.saved` or `wallet.save_failed` for the card `fingerprint`, and the id of
    /// the source created (whose tokens the store then seals), if one was.
    pub fn save(
        &mut self,
        cause: &Meta,
        save: &SaveSource,
        fingerprint: Fingerprint,
    ) -> (OutboundEvent, Option<SourceId>) {
        if let Some((reason, message)) = self.gateway_refusal(save) {
            return (save_failed(cause, save, reason, message), None);
        }
        let card = Source {
            id: ids::customer_payment_source_id(),
            gateway_id: save.gateway_id.clone(),
            name: save.name.clone(),
            metadata: save.metadata.clone(),
            reference: Some(save.reference.clone()),
            fingerprint,
            created_at: self.next_created_at(),
            expires_at: expiry::expires_at(&save.metadata),
            gateway_enabled: true,
        };
        let (now, max) = (self.now, self.max_sources);
        let wallet = self.wallet(&save.customer_id);
        let (id, created) = match wallet.save(card, max, now) {
            Saved::Created(id) => (id, true),
            Saved::Reused(id) => (id, false),
            Saved::Full { held } => {
                let message = format!(
                    "the wallet already holds {held} unexpired payment sources, the most allowed"
                );
                return (
                    save_failed(cause, save, SaveFailure::WalletFull, message),
                    None,
                );
            }
        };
        let event = saved(cause, save, wallet, &id, created, now);
        (event, created.then_some(id))
    }

    /// Why the gateway of `save` refuses it now, if it does.
    fn gateway_refusal(&self, save: &SaveSource) -> Option<(SaveFailure, String)> {
        match self.gateways.get(save.gateway_id.as_str()) {
            None => Some((
                SaveFailure::UnknownGateway,
                format!("gateway {} was removed", save.gateway_id),
            )),
            Some(false) => Some((
                SaveFailure::GatewayDisabled,
                format!("gateway {} is disabled", save.gateway_id),
            )),
            Some(true) => None,
        }
    }

    /// The wall-clock time of a new source, after every other of this batch.
    fn next_created_at(&mut self) -> DateTime<Utc> {
        let mut at = Utc::now();
        if let Some(last) = self.last_created
            && at <= last
        {
            at = last + chrono::Duration::microseconds(1);
        }
        self.last_created = Some(at);
        at
    }

    /// `wallet.attached` with the source's tokens from `open` (customer token, payment
    /// source token), or the rejection. A token that does not open fails the message
    /// (never an event without its tokens).
    pub fn attach<E>(
        &mut self,
        cause: &Meta,
        attach: &WalletAttach,
        slot: Slot,
        open: impl FnOnce(&Source) -> Result<(Secret, Secret), E>,
    ) -> Result<OutboundEvent, E> {
        let source = match self.attachable(attach) {
            Ok(source) => source,
            Err(reason) => return Ok(attach_rejected(cause, attach, reason)),
        };
        let (customer_token, payment_source_token) = open(source)?;
        let event = events::outbound(
            cause,
            WalletAttached {
                order_id: attach.order_id.clone(),
                customer_id: attach.customer_id.clone(),
                customer_payment_source_id: source.id.clone(),
                payment_source: AttachedPaymentSource {
                    kind: "external_payments",
                    gateway_id: source.gateway_id.clone(),
                    customer_token,
                    payment_source_token,
                    metadata: source.metadata.clone(),
                },
            },
        );
        self.attachments.push(Pending {
            slot,
            cause: cause.clone(),
            attach: attach.clone(),
        });
        Ok(event)
    }

    /// The source `attach` names, if the order and the wallet allow it.
    fn attachable(&self, attach: &WalletAttach) -> Result<&Source, AttachRejection> {
        if !attach.order_status.is_editable() {
            return Err(AttachRejection::OrderNotEditable);
        }
        // Unknown and foreign sources look the same: existence is not revealed.
        let source = self
            .wallets
            .get(attach.customer_id.as_str())
            .and_then(|wallet| wallet.find(&attach.customer_payment_source_id))
            .ok_or(AttachRejection::NotFound)?;
        if !source.gateway_enabled {
            return Err(AttachRejection::GatewayDisabled);
        }
        if source.is_expired(self.now) {
            return Err(AttachRejection::Expired);
        }
        Ok(source)
    }

    /// `wallet.removed`, or its rejection.
    pub fn remove(&mut self, cause: &Meta, target: &SourceRef) -> OutboundEvent {
        let now = self.now;
        let wallet = self.wallet(&target.customer_id);
        if !wallet.remove(&target.customer_payment_source_id, now) {
            return rejected(
                cause,
                WalletChange::Remove,
                target,
                WalletRejection::NotFound,
            );
        }
        events::outbound(
            cause,
            WalletRemoved {
                customer_id: target.customer_id.clone(),
                customer_payment_source_id: target.customer_payment_source_id.clone(),
                default_customer_payment_source_id: wallet.chosen_default.clone(),
            },
        )
    }

    /// `wallet.default_set`, or its rejection.
    pub fn set_default(&mut self, cause: &Meta, target: &SourceRef) -> OutboundEvent {
        let now = self.now;
        let wallet = self.wallet(&target.customer_id);
        match wallet.set_default(&target.customer_payment_source_id, now) {
            Ok(()) => events::outbound(
                cause,
                WalletDefaultSet {
                    customer_id: target.customer_id.clone(),
                    customer_payment_source_id: target.customer_payment_source_id.clone(),
                },
            ),
            Err(refused) => {
                let reason = match refused {
                    DefaultRefused::NotFound => WalletRejection::NotFound,
                    DefaultRefused::Expired => WalletRejection::Expired,
                };
                rejected(cause, WalletChange::SetDefault, target, reason)
            }
        }
    }

    /// What the batch changed, against the wallets as loaded, and the orders it
    /// attaches sources to.
    pub fn changes(&self) -> Changes<'_> {
        let mut changes = Changes::default();
        for (customer, now) in &self.wallets {
            let Some(then) = self.loaded.get(customer) else {
                continue;
            };
            changes.created.extend(
                now.sources
                    .iter()
                    .filter(|s| !then.sources.contains(s.id.as_str()))
                    .map(|s| (customer.as_str(), s)),
            );
            changes.removed.extend(
                then.sources
                    .iter()
                    .filter(|id| now.find(id).is_none())
                    .map(String::as_str),
            );
            if then.chosen_default.as_deref() != now.chosen_default.as_deref() {
                changes
                    .defaults
                    .push((customer, now.chosen_default.as_deref()));
            }
        }
        changes.attachments = self.attachments.iter().map(|p| &p.attach).collect();
        changes
    }

    /// An order placed (or otherwise locked) meanwhile was not `attached` (the ids of
    /// the orders the store did attach): its `wallet.attached` becomes
    /// `order_not_editable`.
    pub fn reject_unattached(
        &self,
        attached: &HashSet<String>,
        events: &mut [Option<Vec<OutboundEvent>>],
    ) {
        for Pending {
            slot: (message, event),
            cause,
            attach,
        } in &self.attachments
        {
            if !attached.contains(attach.order_id.as_str())
                && let Some(caused) = &mut events[*message]
            {
                caused[*event] = attach_rejected(cause, attach, AttachRejection::OrderNotEditable);
            }
        }
    }
}

fn saved(
    cause: &Meta,
    save: &SaveSource,
    wallet: &Wallet,
    id: &SourceId,
    created: bool,
    now: DateTime<Utc>,
) -> OutboundEvent {
    let default = wallet.default_source(now).is_some_and(|d| d.id == *id);
    let source = wallet.find(id).expect("the saved source is in the wallet");
    events::outbound(
        cause,
        WalletSaved {
            order_id: save.order_id.clone(),
            customer_id: save.customer_id.clone(),
            customer_payment_source: SourceSummary {
                id: source.id.clone(),
                gateway_id: source.gateway_id.clone(),
                name: source.name.clone(),
                metadata: source.metadata.clone(),
                default,
            },
            created,
        },
    )
}

fn save_failed(
    cause: &Meta,
    save: &SaveSource,
    reason: SaveFailure,
    message: String,
) -> OutboundEvent {
    events::outbound(
        cause,
        WalletSaveFailed {
            order_id: save.order_id.clone(),
            customer_id: Some(save.customer_id.clone()),
            reason,
            message,
        },
    )
}

fn attach_rejected(cause: &Meta, attach: &WalletAttach, reason: AttachRejection) -> OutboundEvent {
    events::outbound(
        cause,
        WalletAttachRejected {
            order_id: attach.order_id.clone(),
            customer_payment_source_id: attach.customer_payment_source_id.clone(),
            reason,
        },
    )
}

fn rejected(
    cause: &Meta,
    change: WalletChange,
    target: &SourceRef,
    reason: WalletRejection,
) -> OutboundEvent {
    events::outbound(
        cause,
        WalletChangeRejected {
            change,
            customer_id: target.customer_id.clone(),
            customer_payment_source_id: target.customer_payment_source_id.clone(),
            reason,
        },
    )
}

#[cfg(test)]
#[path = "commit_rules_tests.rs"]
mod tests;
