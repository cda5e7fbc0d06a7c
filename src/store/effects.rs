//! What a message changes, as data the committer executes inside its transaction, a
//! whole batch of messages at a time.
//!
//! Every decision that depends on stored state is taken here, under the row locks of
//! the commit: whether the order is still editable, whether the source exists, belongs
//! to the customer and is available, whether the gateway is enabled, whether the
//! wallet is full, which source is the default. A concurrent change between a
//! handler's reads and the commit therefore turns into the matching rejection, never
//! into an event that disagrees with the committed rows.
//!
//! A batch runs set-wise ([`batch`]): one statement claims its message ids, locks the
//! customers it touches (in id order) and records its placed orders; another loads the
//! wallets it touches; every change is applied to them in memory in message order
//! ([`crate::domain::wallet`]); one more writes the difference back. The round trips
//! of a commit are therefore per batch, not per message.

use super::wallet::SealedTokens;
use super::{batch, wallet};
use crate::crypto::{Keyring, OpenError};
use crate::domain::events::{
    self, AttachRejection, AttachedPaymentSource, OutboundEvent, SaveFailure, SourceSummary,
    WalletAttachRejected, WalletAttached, WalletChange, WalletChangeRejected, WalletDefaultSet,
    WalletRejection, WalletRemoved, WalletSaveFailed, WalletSaved,
};
use crate::domain::ids::{self, CustomerId, GatewayId, OrderId};
use crate::domain::wallet::{DefaultRefused, Saved, Source, Wallet};
use crate::domain::{Clock, MessageType, Meta, Order, Secret, SourceRef, WalletAttach, expiry};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap, HashSet};

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

/// The wallet rules' settings, and the keys a commit seals and opens secrets with.
#[derive(Debug, Clone)]
pub struct Rules {
    pub clock: Clock,
    /// Unexpired sources one customer may hold.
    pub max_sources_per_customer: i64,
    /// Seals the tokens of new sources, orders and events; opens a source's tokens to
    /// attach it; fingerprints cards.
    pub keys: Keyring,
}

/// One message of a commit batch.
pub struct Message<'a> {
    pub id: &'a str,
    pub kind: MessageType,
    pub change: &'a Change,
}

/// Applies the changes of `messages` (in order) on the transaction `conn`: claims
/// their ids, and applies those claimed for the first time. Returns, per message, the
/// events it causes, or `None` for a duplicate (already processed, or earlier in the
/// batch), which changes nothing.
pub async fn apply_batch(
    conn: &mut PgConnection,
    rules: &Rules,
    messages: &[Message<'_>],
) -> sqlx::Result<Vec<Option<Vec<OutboundEvent>>>> {
    let mut opening = batch::Opening::default();
    for message in messages {
        opening.messages.push((message.id, message.kind.as_str()));
        for effect in &message.change.effects {
            match effect {
                Effect::RecordPlaced(order) => {
                    if let Some(customer) = &order.customer {
                        let email = customer.email.as_deref();
                        opening.customers.push((&customer.id, email, message.id));
                    }
                    opening.placed.push((message.id, order));
                }
                Effect::Emit(_) => {}
                other => {
                    let customer = other
                        .customer_id()
                        .expect("a wallet effect names its customer");
                    opening.customers.push((customer, None, message.id));
                    if let Effect::SaveSource(save) = other {
                        opening.gateways.push(&save.gateway_id);
                    }
                }
            }
        }
    }
    let mut opened = batch::open(conn, &rules.keys, &opening).await?;
    // `remove`: a second message with the same id in this batch is a duplicate too.
    let fresh: Vec<Option<&Change>> = messages
        .iter()
        .map(|m| opened.claimed.remove(m.id).then_some(m.change))
        .collect();
    let wallet_customers: BTreeSet<&str> = fresh
        .iter()
        .flatten()
        .flat_map(|change| change.effects.iter().filter_map(Effect::customer_id))
        .collect();
    let wallet_customers: Vec<&str> = wallet_customers.into_iter().collect();
    let wallet::LoadedWallets { wallets, tokens } =
        wallet::load_wallets(conn, &wallet_customers).await?;
    let loaded: HashMap<String, Loaded> = wallets
        .iter()
        .map(|(customer, wallet)| (customer.clone(), Loaded::from(wallet)))
        .collect();

    let mut batch = InMemory {
        rules,
        now: rules.clock.now(),
        wallets,
        tokens,
        gateways: opened.gateways,
        attachments: Vec::new(),
        last_created: None,
    };
    let mut events: Vec<Option<Vec<OutboundEvent>>> = Vec::with_capacity(messages.len());
    for (position, change) in fresh.iter().enumerate() {
        let Some(change) = change else {
            events.push(None);
            continue;
        };
        let mut caused = Vec::new();
        for effect in &change.effects {
            let event = match effect {
                Effect::RecordPlaced(_) => continue,
                Effect::Emit(event) => event.clone(),
                Effect::SaveSource(save) => batch.save(&change.cause, save),
                Effect::Attach(attach) => batch
                    .attach(&change.cause, attach, (position, caused.len()))
                    .map_err(|err| sqlx::Error::Decode(err.into()))?,
                Effect::Remove(target) => batch.remove(&change.cause, target),
                Effect::SetDefault(target) => batch.set_default(&change.cause, target),
            };
            caused.push(event);
        }
        events.push(Some(caused));
    }
    let writes = batch.writes(&loaded);
    if !writes.is_empty() {
        let attached = batch::write(conn, &writes).await?;
        batch.reject_unattached(&attached, messages, &mut events);
    }
    Ok(events)
}

impl Effect {
    /// The customer whose wallet this effect reads or changes.
    fn customer_id(&self) -> Option<&str> {
        match self {
            Effect::SaveSource(save) => Some(&save.customer_id),
            Effect::Attach(attach) => Some(&attach.customer_id),
            Effect::Remove(target) | Effect::SetDefault(target) => Some(&target.customer_id),
            Effect::RecordPlaced(_) | Effect::Emit(_) => None,
        }
    }
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

/// The wallets of one commit batch while its changes are applied in memory.
struct InMemory<'r> {
    rules: &'r Rules,
    now: DateTime<Utc>,
    wallets: HashMap<String, Wallet>,
    /// The sealed tokens of every source of those wallets, new ones included.
    tokens: HashMap<String, SealedTokens>,
    /// Whether each gateway saved to exists and is enabled (absent: removed).
    gateways: HashMap<String, bool>,
    /// Attaches that passed the wallet checks, by (message position, event position):
    /// their orders are recorded together, and those already placed become rejections.
    attachments: Vec<((usize, usize), WalletAttach)>,
    /// When the last source of this batch was created: keeps "most recently saved"
    /// strictly ordered within a batch.
    last_created: Option<DateTime<Utc>>,
}

impl InMemory<'_> {
    fn wallet(&mut self, customer_id: &CustomerId) -> &mut Wallet {
        self.wallets
            .get_mut(customer_id.as_str())
            .expect("every wallet of the batch is loaded")
    }

    fn save(&mut self, cause: &Meta, save: &SaveSource) -> OutboundEvent {
        let refuse = |reason, message: String| {
            events::outbound(
                cause,
                WalletSaveFailed {
                    order_id: save.order_id.clone(),
                    customer_id: Some(save.customer_id.clone()),
                    reason,
                    message,
                },
            )
        };
        match self.gateways.get(save.gateway_id.as_str()) {
            None => {
                let message = format!("gateway {} was removed", save.gateway_id);
                return refuse(SaveFailure::UnknownGateway, message);
            }
            Some(false) => {
                let message = format!("gateway {} is disabled", save.gateway_id);
                return refuse(SaveFailure::GatewayDisabled, message);
            }
            Some(true) => {}
        }
        let rules = self.rules;
        let card = Source {
            id: ids::customer_payment_source_id(),
            gateway_id: save.gateway_id.clone(),
            name: save.name.clone(),
            metadata: save.metadata.clone(),
            reference: Some(save.reference.clone()),
            fingerprint: rules
                .keys
                .fingerprint(&save.gateway_id, &save.payment_source_token),
            created_at: self.next_created_at(),
            expires_at: expiry::expires_at(&save.metadata),
            gateway_enabled: true,
        };
        let now = self.now;
        let max = usize::try_from(self.rules.max_sources_per_customer).unwrap_or(usize::MAX);
        let wallet = self.wallet(&save.customer_id);
        let (id, created) = match wallet.save(card, max, now) {
            Saved::Created(id) => (id, true),
            Saved::Reused(id) => (id, false),
            Saved::Full { held } => {
                let message = format!(
                    "the wallet already holds {held} unexpired payment sources, the most allowed"
                );
                return refuse(SaveFailure::WalletFull, message);
            }
        };
        let default = wallet.default_source(now).is_some_and(|d| d.id == id);
        let source = wallet.find(&id).expect("the saved source is in the wallet");
        let event = events::outbound(
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
        );
        if created {
            let (customer, source) = (&save.customer_token, &save.payment_source_token);
            let sealed = SealedTokens::seal(&rules.keys, &id, customer, source);
            self.tokens.insert(id.into(), sealed);
        }
        event
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

    /// `wallet.attached` with the source's tokens opened, or the rejection. A token
    /// that does not open fails the message (never an event without its tokens).
    fn attach(
        &mut self,
        cause: &Meta,
        attach: &WalletAttach,
        slot: (usize, usize),
    ) -> Result<OutboundEvent, OpenError> {
        if !attach.order_status.is_editable() {
            return Ok(attach_rejected(
                cause,
                attach,
                AttachRejection::OrderNotEditable,
            ));
        }
        let now = self.now;
        // Unknown and foreign sources look the same: existence is not revealed.
        let Some(source) = self
            .wallets
            .get(attach.customer_id.as_str())
            .and_then(|wallet| wallet.find(&attach.customer_payment_source_id))
        else {
            return Ok(attach_rejected(cause, attach, AttachRejection::NotFound));
        };
        if !source.gateway_enabled {
            return Ok(attach_rejected(
                cause,
                attach,
                AttachRejection::GatewayDisabled,
            ));
        }
        if source.is_expired(now) {
            return Ok(attach_rejected(cause, attach, AttachRejection::Expired));
        }
        let (customer_token, payment_source_token) = self
            .tokens
            .get(source.id.as_str())
            .expect("every loaded source has its sealed tokens")
            .open(&self.rules.keys, &source.id)?;
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
        self.attachments.push((slot, attach.clone()));
        Ok(event)
    }

    fn remove(&mut self, cause: &Meta, target: &SourceRef) -> OutboundEvent {
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

    fn set_default(&mut self, cause: &Meta, target: &SourceRef) -> OutboundEvent {
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
    fn writes<'b>(&'b self, loaded: &'b HashMap<String, Loaded>) -> batch::Writes<'b> {
        let mut writes = batch::Writes::default();
        for (customer, now) in &self.wallets {
            let Some(then) = loaded.get(customer) else {
                continue;
            };
            writes.created.extend(
                now.sources
                    .iter()
                    .filter(|s| !then.sources.contains(s.id.as_str()))
                    .map(|s| {
                        let sealed = self
                            .tokens
                            .get(s.id.as_str())
                            .expect("a new source is sealed");
                        (customer.as_str(), s, sealed)
                    }),
            );
            writes.removed.extend(
                then.sources
                    .iter()
                    .filter(|id| now.find(id).is_none())
                    .map(String::as_str),
            );
            if then.chosen_default.as_deref() != now.chosen_default.as_deref() {
                writes
                    .defaults
                    .push((customer, now.chosen_default.as_deref()));
            }
        }
        writes.attachments = self
            .attachments
            .iter()
            .map(|(_, attach)| batch::Attachment {
                order_id: &attach.order_id,
                customer_id: &attach.customer_id,
                status: &attach.order_status,
                customer_payment_source_id: &attach.customer_payment_source_id,
            })
            .collect();
        writes
    }

    /// An order placed (or otherwise locked) meanwhile was not `attached`: its
    /// `wallet.attached` becomes `order_not_editable`.
    fn reject_unattached(
        &self,
        attached: &HashSet<String>,
        messages: &[Message<'_>],
        events: &mut [Option<Vec<OutboundEvent>>],
    ) {
        for ((message, event), attach) in &self.attachments {
            if !attached.contains(attach.order_id.as_str()) {
                let cause = &messages[*message].change.cause;
                if let Some(caused) = &mut events[*message] {
                    caused[*event] =
                        attach_rejected(cause, attach, AttachRejection::OrderNotEditable);
                }
            }
        }
    }
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
