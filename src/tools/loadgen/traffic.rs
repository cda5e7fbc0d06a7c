//! The traffic a load test publishes: placed orders (some asking to save their card),
//! later `wallet.save`s, and `wallet.attach`es, default changes and removals of sources
//! saved earlier in the run, for customers drawn from a pool so cards repeat. The mix is decided by a seeded RNG, so
//! one seed gives the same shape of traffic; ids are fresh on every run, so a re-run is
//! never swallowed by the worker's idempotency.

use super::message::Message;
use super::report::SavedSource;
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Share of messages that attach a source saved earlier in the run (once one exists).
const ATTACH_SHARE: f64 = 0.20;
/// Share of messages that make a source saved earlier its customer's default.
const SET_DEFAULT_SHARE: f64 = 0.04;
/// Share of messages that remove a source saved earlier (later attaches of it are
/// refused `not_found`, as in a real shop).
const REMOVE_SHARE: f64 = 0.02;
/// Share of messages that save the card of an order placed earlier without the flag.
const LATE_SAVE_SHARE: f64 = 0.10;
/// Placed orders from guests: asked to save, they are refused (`guest_customer`).
const GUEST_SHARE: f64 = 0.03;
/// Placed orders paying with a card the sim declines (`gateway_refused`).
const DECLINED_SHARE: f64 = 0.02;
/// Attaches aimed at an order already placed: refused (`order_not_editable`).
const NOT_EDITABLE_SHARE: f64 = 0.05;
/// A `wallet.save` goes out once a message published after its order was answered
/// (the worker has most likely recorded the order by then), or at the latest this
/// long after the order, since placed orders alone are never answered. An early save
/// is retried by the worker and shows in the latency tail.
const LATE_SAVE_MIN_AGE: Duration = Duration::from_secs(1);
/// Customers per message: enough that most saves are new cards, few enough that
/// some repeat (`created: false`) and some customers come back to attach.
const MESSAGES_PER_CUSTOMER: u64 = 6;
const BRANDS: [&str; 3] = ["visa", "mastercard", "amex"];

/// A customer of the simulated shop and the cards they pay with.
struct Customer {
    id: String,
    email: String,
    cards: Vec<Card>,
}

#[derive(Clone)]
struct Card {
    token: String,
    brand: &'static str,
    last4: String,
    exp_year: u32,
}

/// An order placed without the flag, waiting for a possible `wallet.save`.
struct Flagless {
    seq: u64,
    placed_at: Instant,
    order_id: String,
    correlation_id: String,
}

/// What the next message is; attaches and late saves depend on earlier answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Attach a saved source, chosen by `pick` among those saved so far.
    Attach {
        pick: u64,
    },
    /// Make a saved source the default, or remove one (chosen like attaches).
    SetDefault {
        pick: u64,
    },
    Remove {
        pick: u64,
    },
    LateSave,
    Placed,
}

/// Produces the run's messages one at a time.
pub(crate) struct Traffic {
    /// Decides the shape: kinds, customers, cards, flags.
    shape: StdRng,
    /// Mints ids and tokens; seeded afresh each run.
    ids: StdRng,
    run: String,
    seq: u64,
    gateway_id: String,
    save_ratio: f64,
    customers: Vec<Customer>,
    flagless: VecDeque<Flagless>,
}

impl Traffic {
    pub fn new(run: &str, seed: u64, count: u64, gateway_id: &str, save_ratio: f64) -> Self {
        let mut shape = StdRng::seed_from_u64(seed);
        let mut ids = StdRng::seed_from_u64(rand::random());
        let pool = (count / MESSAGES_PER_CUSTOMER).max(10);
        let customers = (0..pool)
            .map(|_| {
                let id = alnum(&mut ids, 10);
                let cards = (0..shape.random_range(1..=2))
                    .map(|_| card(&mut shape, &mut ids, "tok"))
                    .collect();
                Customer {
                    email: format!("{}@example.com", id.to_lowercase()),
                    id,
                    cards,
                }
            })
            .collect();
        Self {
            shape,
            ids,
            run: run.to_owned(),
            seq: 0,
            gateway_id: gateway_id.to_owned(),
            save_ratio,
            customers,
            flagless: VecDeque::new(),
        }
    }

    /// Rolls what the next message is; the caller builds it once its dependency is met.
    pub fn plan(&mut self) -> Plan {
        let roll: f64 = self.shape.random();
        let pick: u64 = self.shape.random();
        let wallet_changes = ATTACH_SHARE + SET_DEFAULT_SHARE + REMOVE_SHARE;
        if roll < ATTACH_SHARE {
            Plan::Attach { pick }
        } else if roll < ATTACH_SHARE + SET_DEFAULT_SHARE {
            Plan::SetDefault { pick }
        } else if roll < wallet_changes {
            Plan::Remove { pick }
        } else if roll < wallet_changes + LATE_SAVE_SHARE && !self.flagless.is_empty() {
            Plan::LateSave
        } else {
            Plan::Placed
        }
    }

    /// Whether an order placed without the flag is still waiting for its late save.
    pub fn has_flagless(&self) -> bool {
        !self.flagless.is_empty()
    }

    /// A `wallet.save` of the oldest order placed without the flag, once the worker
    /// has likely recorded it: a message published after it was answered, or it is
    /// [`LATE_SAVE_MIN_AGE`] old (placed orders alone are never answered).
    pub fn late_save(&mut self, answered_up_to: u64) -> Option<Message> {
        let order = self.flagless.front()?;
        if order.seq >= answered_up_to && order.placed_at.elapsed() < LATE_SAVE_MIN_AGE {
            return None;
        }
        let order = self.flagless.pop_front()?;
        let data = json!({ "order_id": order.order_id });
        Some(self.build("wallet.save", &order.correlation_id, data, true))
    }

    /// A new order, with or without the flag (never waits for anything).
    pub fn placed(&mut self) -> Message {
        let seq = self.seq + 1;
        let order_id = alnum(&mut self.ids, 10);
        let correlation_id = format!("corr_{order_id}");
        let save = self.shape.random_bool(self.save_ratio);
        let guest = self.shape.random_bool(GUEST_SHARE);
        let declined = self.shape.random_bool(DECLINED_SHARE);
        let customer = &self.customers[self.shape.random_range(0..self.customers.len())];
        let mut paying = customer.cards[self.shape.random_range(0..customer.cards.len())].clone();
        if declined {
            paying = card(&mut self.shape, &mut self.ids, "tok_refuse");
        }
        let mut order = json!({
            "id": order_id, "number": seq.to_string(), "status": "placed",
            "guest": guest, "currency_code": "EUR",
            "total_amount_cents": self.shape.random_range(500..50_000),
            "payment_source": {
                "type": "external_payments", "id": alnum(&mut self.ids, 10),
                "gateway_id": self.gateway_id, "payment_source_token": paying.token,
                "metadata": { "brand": paying.brand, "last4": paying.last4,
                              "exp_month": 12, "exp_year": paying.exp_year } },
            "save_payment_source_to_customer_wallet": save,
        });
        if !guest {
            order["customer"] = json!({ "id": customer.id, "email": customer.email });
            if !save && !declined {
                self.flagless.push_back(Flagless {
                    seq,
                    placed_at: Instant::now(),
                    order_id: order_id.clone(),
                    correlation_id: correlation_id.clone(),
                });
            }
        }
        self.build(
            "order.placed",
            &correlation_id,
            json!({ "order": order }),
            save,
        )
    }

    /// Attaches `source` (saved earlier) to a new order of its owner in checkout.
    pub fn attach(&mut self, source: SavedSource) -> Message {
        let order_id = alnum(&mut self.ids, 10);
        let status = if self.shape.random_bool(NOT_EDITABLE_SHARE) {
            "placed"
        } else {
            "pending"
        };
        let data = attach_data(&order_id, status, &source.customer_id, &source.source_id);
        self.build("wallet.attach", &format!("corr_{order_id}"), data, true)
    }

    /// A `wallet.set_default` or `wallet.remove` of `source` (saved earlier) by its owner.
    pub fn wallet_change(&mut self, kind: &str, source: SavedSource) -> Message {
        let data = json!({ "customer_id": source.customer_id,
                           "customer_payment_source_id": source.source_id });
        let correlation = format!("corr_{}", alnum(&mut self.ids, 10));
        self.build(kind, &correlation, data, true)
    }

    /// The next message in sequence: ids `<run>-000001`, ... in publish order.
    fn build(
        &mut self,
        kind: &str,
        correlation: &str,
        data: Value,
        expects_event: bool,
    ) -> Message {
        self.seq += 1;
        let id = format!("{}-{:06}", self.run, self.seq);
        let mut message = Message::envelope(&id, kind, correlation, data, expects_event);
        message.seq = self.seq;
        message
    }
}

/// The `data` of a `wallet.attach` (docs/messages.md, inbound messages).
pub fn attach_data(order_id: &str, status: &str, customer_id: &str, source_id: &str) -> Value {
    json!({ "order": { "id": order_id, "status": status, "customer": { "id": customer_id } },
            "customer_payment_source_id": source_id })
}

fn card(shape: &mut StdRng, ids: &mut StdRng, prefix: &str) -> Card {
    Card {
        token: format!("{prefix}_{}", alnum(ids, 16)),
        brand: BRANDS[shape.random_range(0..BRANDS.len())],
        last4: format!("{:04}", shape.random_range(0..10_000)),
        exp_year: shape.random_range(2027..2033),
    }
}

/// `len` random alphanumerics, like Commerce Layer ids (`qaMAhZkZvd`).
pub(crate) fn alnum(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> SavedSource {
        SavedSource {
            customer_id: "c".into(),
            source_id: "s".into(),
        }
    }

    fn messages(seed: u64) -> Vec<Message> {
        let mut traffic = Traffic::new("lg-test", seed, 600, "sim", 0.5);
        (0..600)
            .map(|_| match traffic.plan() {
                Plan::Attach { .. } => traffic.attach(source()),
                Plan::SetDefault { .. } => traffic.wallet_change("wallet.set_default", source()),
                Plan::Remove { .. } => traffic.wallet_change("wallet.remove", source()),
                Plan::LateSave => traffic.late_save(u64::MAX).expect("a flagless order"),
                Plan::Placed => traffic.placed(),
            })
            .collect()
    }

    fn kinds(seed: u64) -> Vec<(String, bool)> {
        messages(seed)
            .into_iter()
            .map(|message| (message.routing_key, message.expects_event))
            .collect()
    }

    /// What a load test publishes is what the interface documents.
    #[test]
    fn every_generated_message_matches_its_json_schema() {
        for message in messages(11) {
            let path = format!(
                "{}/docs/schemas/{}.json",
                env!("CARGO_MANIFEST_DIR"),
                message.routing_key
            );
            let schema: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            let body: Value = serde_json::from_slice(&message.body).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&body)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", message.routing_key);
        }
    }

    #[test]
    fn one_seed_gives_one_shape_of_traffic_with_every_kind() {
        let first = kinds(7);
        assert_eq!(first, kinds(7));
        assert_ne!(first, kinds(8));
        for kind in [
            "order.placed",
            "wallet.save",
            "wallet.attach",
            "wallet.set_default",
            "wallet.remove",
        ] {
            assert!(first.iter().any(|(k, _)| k == kind), "no {kind}");
        }
        assert!(
            first.iter().any(|(_, expects)| !expects),
            "no fire-and-forget order"
        );
    }
}
