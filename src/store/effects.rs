//! Executes what messages change ([`Change`]) inside the committer's transaction, a
//! whole batch of messages at a time: the store's half of a commit. The rules that
//! decide each effect's event, under the row locks of the commit, are
//! [`crate::domain::commit_rules`]; here they meet the rows and the keys.
//!
//! A batch runs set-wise ([`batch`]): one statement claims its message ids, locks the
//! customers it touches (in id order) and records its placed orders; another loads the
//! wallets it touches; every change is applied to them in memory in message order
//! ([`CommitRules`]); one more writes the difference back. The round trips of a commit
//! are therefore per batch, not per message.

use super::wallet::SealedTokens;
use super::{batch, wallet};
use crate::crypto::Keyring;
use crate::domain::commit_rules::{CommitRules, Slot};
use crate::domain::events::OutboundEvent;
use crate::domain::{
    Change, Clock, Effect, MessageId, MessageType, Meta, SaveSource, WalletAttach,
};
use sqlx::PgConnection;
use std::collections::{BTreeSet, HashMap};

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
    pub id: &'a MessageId,
    pub kind: MessageType,
    pub change: &'a Change,
}

/// Per message of a batch: the events it causes, or `None` for a duplicate.
type Caused = Vec<Option<Vec<OutboundEvent>>>;

/// Applies the changes of `messages` (in order) on the transaction `conn`: claims
/// their ids, and applies those claimed for the first time. Returns, per message, the
/// events it causes, or `None` for a duplicate (already processed, or earlier in the
/// batch), which changes nothing.
pub async fn apply_batch(
    conn: &mut PgConnection,
    rules: &Rules,
    messages: &[Message<'_>],
) -> sqlx::Result<Caused> {
    let mut opened = batch::open(conn, &rules.keys, &opening(messages)).await?;
    // `remove`: a second message with the same id in this batch is a duplicate too.
    let fresh: Vec<Option<&Change>> = messages
        .iter()
        .map(|m| opened.claimed.remove(m.id.as_str()).then_some(m.change))
        .collect();
    let wallet::LoadedWallets { wallets, tokens } =
        wallet::load_wallets(conn, &wallet_customers(&fresh)).await?;
    let max_sources = usize::try_from(rules.max_sources_per_customer).unwrap_or(usize::MAX);
    let mut applying = Applying {
        keys: &rules.keys,
        rules: CommitRules::new(rules.clock.now(), max_sources, wallets, opened.gateways),
        tokens,
    };
    let mut events = applying.apply_all(&fresh)?;
    let writes = applying.writes();
    if !writes.is_empty() {
        let attached = batch::write(conn, &writes).await?;
        applying.rules.reject_unattached(&attached, &mut events);
    }
    Ok(events)
}

/// What the batch records before it looks at any wallet: its message ids, the
/// customers it names, its placed orders and the gateways it saves to.
fn opening<'a>(messages: &[Message<'a>]) -> batch::Opening<'a> {
    let mut opening = batch::Opening::default();
    for message in messages {
        opening
            .messages
            .push((message.id.as_str(), message.kind.as_str()));
        for effect in &message.change.effects {
            match effect {
                Effect::RecordPlaced(order) => {
                    if let Some(customer) = &order.customer {
                        let email = customer.email.as_deref();
                        opening
                            .customers
                            .push((&customer.id, email, message.id.as_str()));
                    }
                    opening.placed.push((message.id.as_str(), order));
                }
                Effect::Emit(_) => {}
                other => {
                    let customer = other
                        .customer_id()
                        .expect("a wallet effect names its customer");
                    opening
                        .customers
                        .push((customer, None, message.id.as_str()));
                    if let Effect::SaveSource(save) = other {
                        opening.gateways.push(&save.gateway_id);
                    }
                }
            }
        }
    }
    opening
}

/// The customers whose wallets the fresh changes read or change, in id order.
fn wallet_customers<'a>(fresh: &[Option<&'a Change>]) -> Vec<&'a str> {
    let customers: BTreeSet<&str> = fresh
        .iter()
        .flatten()
        .flat_map(|change| change.effects.iter().filter_map(Effect::customer_id))
        .collect();
    customers.into_iter().collect()
}

/// A batch's changes being applied: the rules over its wallets, and the keys and
/// sealed tokens the rules never see.
struct Applying<'r> {
    keys: &'r Keyring,
    rules: CommitRules,
    /// The sealed tokens of every source of the batch's wallets, new ones included.
    tokens: HashMap<String, SealedTokens>,
}

impl Applying<'_> {
    fn apply_all(&mut self, fresh: &[Option<&Change>]) -> sqlx::Result<Caused> {
        fresh
            .iter()
            .enumerate()
            .map(|(position, change)| change.map(|c| self.apply(position, c)).transpose())
            .collect()
    }

    /// The events of the message at `position` of the batch.
    fn apply(&mut self, position: usize, change: &Change) -> sqlx::Result<Vec<OutboundEvent>> {
        let cause = &change.cause;
        let mut caused = Vec::new();
        for effect in &change.effects {
            let event = match effect {
                Effect::RecordPlaced(_) => continue,
                Effect::Emit(event) => event.clone(),
                Effect::SaveSource(save) => self.save(cause, save),
                Effect::Attach(attach) => self.attach(cause, attach, (position, caused.len()))?,
                Effect::Remove(target) => self.rules.remove(cause, target),
                Effect::SetDefault(target) => self.rules.set_default(cause, target),
            };
            caused.push(event);
        }
        Ok(caused)
    }

    /// Saves the card by its fingerprint; a new source's tokens are sealed at once.
    fn save(&mut self, cause: &Meta, save: &SaveSource) -> OutboundEvent {
        let fingerprint = self
            .keys
            .fingerprint(&save.gateway_id, &save.payment_source_token);
        let (event, created) = self.rules.save(cause, save, fingerprint);
        if let Some(id) = created {
            let (customer, source) = (&save.customer_token, &save.payment_source_token);
            let sealed = SealedTokens::seal(self.keys, &id, customer, source);
            self.tokens.insert(id.into(), sealed);
        }
        event
    }

    /// Attaches with the source's tokens opened; a token that does not open fails
    /// the batch.
    fn attach(
        &mut self,
        cause: &Meta,
        attach: &WalletAttach,
        slot: Slot,
    ) -> sqlx::Result<OutboundEvent> {
        let (keys, tokens) = (self.keys, &self.tokens);
        self.rules
            .attach(cause, attach, slot, |source| {
                tokens
                    .get(source.id.as_str())
                    .expect("every loaded source has its sealed tokens")
                    .open(keys, &source.id)
            })
            .map_err(|err| sqlx::Error::Decode(err.into()))
    }

    /// The rules' changes as rows to write, new sources with their sealed tokens.
    fn writes(&self) -> batch::Writes<'_> {
        let changes = self.rules.changes();
        let created = changes.created.into_iter().map(|(customer, source)| {
            let sealed = self
                .tokens
                .get(source.id.as_str())
                .expect("a new source is sealed");
            (customer, source, sealed)
        });
        let attachments = changes
            .attachments
            .into_iter()
            .map(|attach| batch::Attachment {
                order_id: &attach.order_id,
                customer_id: &attach.customer_id,
                status: &attach.order_status,
                customer_payment_source_id: &attach.customer_payment_source_id,
            });
        batch::Writes {
            created: created.collect(),
            removed: changes.removed,
            defaults: changes.defaults,
            attachments: attachments.collect(),
        }
    }
}
