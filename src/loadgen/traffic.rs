//! The traffic a load test publishes: placed orders (some asking to save their card),
//! later `wallet.save`s, and `wallet.attach`es of sources saved earlier in the run, for
//! customers drawn from a pool so cards repeat. The mix is decided by a seeded RNG, so
//! one seed gives the same shape of traffic; ids are fresh on every run, so a re-run is
//! never swallowed by the worker's idempotency.

use super::message::Message;
use super::tracker::SavedSource;
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::collections::VecDeque;

/// Share of messages that attach a source saved earlier in the run (once one exists).
const ATTACH_SHARE: f64 = 0.20;
/// Share of messages that save the card of an order placed earlier without the flag.
const LATE_SAVE_SHARE: f64 = 0.10;
/// Placed orders from guests: asked to save, they are refused (`guest_customer`).
const GUEST_SHARE: f64 = 0.03;
/// Placed orders paying with a card the sim declines (`gateway_refused`).
const DECLINED_SHARE: f64 = 0.02;
/// Attaches aimed at an order already placed: refused (`order_not_editable`).
const NOT_EDITABLE_SHARE: f64 = 0.05;
/// A `wallet.save` follows its order by at least this many messages: more than a
/// worker's default prefetch, so the order is normally recorded by then (if it is
/// not, the worker retries the save, which shows in the latency tail).
const LATE_SAVE_LAG: u64 = 128;
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
    order_id: String,
    correlation_id: String,
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

    /// The next message. `saved(n)` picks a source saved so far (any, by `n`), if any.
    pub fn next(&mut self, saved: impl FnOnce(u64) -> Option<SavedSource>) -> Message {
        self.seq += 1;
        let roll: f64 = self.shape.random();
        let pick: u64 = self.shape.random();
        if roll < ATTACH_SHARE
            && let Some(source) = saved(pick)
        {
            return self.attach(source);
        }
        if roll < ATTACH_SHARE + LATE_SAVE_SHARE
            && self
                .flagless
                .front()
                .is_some_and(|f| self.seq - f.seq >= LATE_SAVE_LAG)
            && let Some(order) = self.flagless.pop_front()
        {
            let data = json!({ "order_id": order.order_id });
            return Message::envelope(&self.id(), "wallet.save", &order.correlation_id, data, true);
        }
        self.placed()
    }

    fn placed(&mut self) -> Message {
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
            "id": order_id, "number": self.seq.to_string(), "status": "placed",
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
                    seq: self.seq,
                    order_id: order_id.clone(),
                    correlation_id: correlation_id.clone(),
                });
            }
        }
        let data = json!({ "order": order });
        Message::envelope(&self.id(), "order.placed", &correlation_id, data, save)
    }

    fn attach(&mut self, source: SavedSource) -> Message {
        let order_id = alnum(&mut self.ids, 10);
        let status = if self.shape.random_bool(NOT_EDITABLE_SHARE) {
            "placed"
        } else {
            "pending"
        };
        let data = attach_data(&order_id, status, &source.customer_id, &source.source_id);
        Message::envelope(
            &self.id(),
            "wallet.attach",
            &format!("corr_{order_id}"),
            data,
            true,
        )
    }

    fn id(&self) -> String {
        format!("{}-{:06}", self.run, self.seq)
    }
}

/// The `data` of a `wallet.attach` (contract §4).
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

    fn kinds(seed: u64) -> Vec<(String, bool)> {
        let mut traffic = Traffic::new("lg-test", seed, 600, "sim", 0.5);
        (0..600)
            .map(|n| {
                let source = SavedSource {
                    customer_id: "c".into(),
                    source_id: "s".into(),
                };
                let m = traffic.next(|_| (n > 50).then_some(source));
                (m.routing_key, m.expects_event)
            })
            .collect()
    }

    #[test]
    fn one_seed_gives_one_shape_of_traffic_with_every_kind() {
        let first = kinds(7);
        assert_eq!(first, kinds(7));
        assert_ne!(first, kinds(8));
        for kind in ["order.placed", "wallet.save", "wallet.attach"] {
            assert!(first.iter().any(|(k, _)| k == kind), "no {kind}");
        }
        assert!(
            first.iter().any(|(_, expects)| !expects),
            "no fire-and-forget order"
        );
    }
}
