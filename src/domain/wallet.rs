//! One customer's wallet as a commit holds it (loaded under the customer's row lock),
//! and the wallet rules applied to it in memory: availability, the default, the cap,
//! saving, removing and choosing the default. The store loads the wallets a batch
//! touches, applies every change here in message order, and writes back the difference
//! with one statement per kind of row.

use super::expiry;
use super::ids::{CustomerId, GatewayId, SourceId};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use std::fmt;

/// Which card a source is, without the card: a keyed hash of its gateway and payment
/// source token (the store computes it; the wallet only compares). "The same card"
/// is the same fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// A stored (or about to be stored) customer payment source.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: SourceId,
    pub gateway_id: GatewayId,
    pub name: String,
    pub metadata: Map<String, Value>,
    /// The order payment source it was saved from.
    pub reference: Option<String>,
    /// The card (its tokens stay sealed in the store; the rules never need them).
    pub fingerprint: Fingerprint,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Its gateway exists and is enabled (as read in the commit).
    pub gateway_enabled: bool,
}

impl Source {
    /// Available: its gateway is enabled and the card has not expired at `now`.
    pub fn is_available(&self, now: DateTime<Utc>) -> bool {
        self.gateway_enabled && !self.is_expired(now)
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        expiry::is_expired(self.expires_at, now)
    }
}

/// What saving a card did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// A new source with this id.
    Created(SourceId),
    /// The wallet already held the card (same gateway and payment source token: the
    /// same fingerprint).
    Reused(SourceId),
    /// A new card, but the wallet holds this many unexpired sources: the most allowed.
    Full { held: usize },
}

/// Why a default change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultRefused {
    /// Unknown, another customer's, or not available because of its gateway.
    NotFound,
    Expired,
}

/// One customer's wallet.
#[derive(Debug, Clone)]
pub struct Wallet {
    pub customer_id: CustomerId,
    pub sources: Vec<Source>,
    /// The source recorded as the default (`wallet_defaults`), if any.
    pub chosen_default: Option<SourceId>,
}

impl Wallet {
    pub fn find(&self, id: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.id == id)
    }

    /// The default by the rules: the chosen source while it is available, else the most
    /// recently saved available source, else none.
    pub fn default_source(&self, now: DateTime<Utc>) -> Option<&Source> {
        let chosen = self
            .chosen_default
            .as_deref()
            .and_then(|id| self.find(id))
            .filter(|s| s.is_available(now));
        chosen.or_else(|| {
            self.sources
                .iter()
                .filter(|s| s.is_available(now))
                .max_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)))
        })
    }

    /// Records the default the rules give now and returns it.
    pub fn settle_default(&mut self, now: DateTime<Utc>) -> Option<SourceId> {
        self.chosen_default = self.default_source(now).map(|s| s.id.clone());
        self.chosen_default.clone()
    }

    /// Unexpired sources: what the cap counts.
    pub fn held(&self, now: DateTime<Utc>) -> usize {
        self.sources.iter().filter(|s| !s.is_expired(now)).count()
    }

    /// Saves `card` unless the wallet holds it already, within the cap of `max_sources`
    /// unexpired sources. The default is settled before a new card arrives, so a
    /// newcomer becomes the default only when there is no other (the first card).
    pub fn save(&mut self, card: Source, max_sources: usize, now: DateTime<Utc>) -> Saved {
        let held_already = self
            .sources
            .iter()
            .find(|s| s.fingerprint == card.fingerprint);
        if let Some(existing) = held_already {
            let id = existing.id.clone();
            self.settle_default(now);
            return Saved::Reused(id);
        }
        let held = self.held(now);
        if held >= max_sources {
            return Saved::Full { held };
        }
        self.settle_default(now);
        let id = card.id.clone();
        self.sources.push(card);
        self.settle_default(now);
        Saved::Created(id)
    }

    /// Removes the source `id`; false when the wallet holds none. The default follows.
    pub fn remove(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        let before = self.sources.len();
        self.sources.retain(|s| s.id != id);
        if self.sources.len() == before {
            return false;
        }
        if self.chosen_default.as_deref() == Some(id) {
            // The choice goes with the source; the next default is the most recent.
            self.chosen_default = None;
        }
        self.settle_default(now);
        true
    }

    /// Makes `id` the default, if it is available.
    pub fn set_default(&mut self, id: &SourceId, now: DateTime<Utc>) -> Result<(), DefaultRefused> {
        let source = self
            .find(id)
            .filter(|s| s.gateway_enabled)
            .ok_or(DefaultRefused::NotFound)?;
        if source.is_expired(now) {
            return Err(DefaultRefused::Expired);
        }
        self.chosen_default = Some(id.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    fn card(id: &str, token: &str, age_days: i64, expired: bool) -> Source {
        Source {
            id: SourceId::stored(id.into()),
            gateway_id: GatewayId::stored("gw".into()),
            name: "Visa ending in 4242".into(),
            metadata: Map::new(),
            reference: None,
            fingerprint: fingerprint(token),
            created_at: now() - Duration::days(age_days),
            expires_at: Some(if expired {
                now() - Duration::days(1)
            } else {
                now() + Duration::days(365)
            }),
            gateway_enabled: true,
        }
    }

    /// Distinct tokens, distinct fingerprints (the store's are keyed hashes).
    fn fingerprint(token: &str) -> Fingerprint {
        let mut bytes = [0; 32];
        for (b, t) in bytes.iter_mut().zip(token.bytes()) {
            *b = t;
        }
        Fingerprint(bytes)
    }

    fn id(text: &str) -> SourceId {
        SourceId::stored(text.into())
    }

    fn wallet() -> Wallet {
        Wallet {
            customer_id: CustomerId::stored("c".into()),
            sources: Vec::new(),
            chosen_default: None,
        }
    }

    #[test]
    fn the_first_card_is_the_default_and_the_next_ones_are_not() {
        let mut w = wallet();
        assert_eq!(
            w.save(card("a", "t1", 2, false), 20, now()),
            Saved::Created(id("a"))
        );
        assert_eq!(
            w.save(card("b", "t2", 1, false), 20, now()),
            Saved::Created(id("b"))
        );
        assert_eq!(w.default_source(now()).unwrap().id, "a");
        assert_eq!(
            w.save(card("x", "t1", 0, false), 20, now()),
            Saved::Reused(id("a"))
        );
    }

    #[test]
    fn an_unavailable_default_gives_way_to_the_most_recent_held_before_a_new_card() {
        let mut w = wallet();
        w.save(card("a", "t1", 3, false), 20, now());
        w.save(card("l", "t2", 2, false), 20, now());
        w.sources[0].gateway_enabled = false;
        w.save(card("n", "t3", 0, false), 20, now());
        assert_eq!(w.default_source(now()).unwrap().id, "l");
    }

    #[test]
    fn the_cap_counts_unexpired_sources_only() {
        let mut w = wallet();
        w.save(card("old", "t0", 9, true), 1, now());
        assert_eq!(
            w.save(card("a", "t1", 2, false), 1, now()),
            Saved::Created(id("a"))
        );
        assert_eq!(
            w.save(card("b", "t2", 1, false), 1, now()),
            Saved::Full { held: 1 }
        );
    }

    #[test]
    fn removing_the_default_promotes_the_most_recent_available() {
        let mut w = wallet();
        w.save(card("a", "t1", 3, false), 20, now());
        w.save(card("b", "t2", 2, false), 20, now());
        w.save(card("c", "t3", 1, true), 20, now());
        assert!(w.remove("a", now()));
        assert_eq!(w.chosen_default.as_deref(), Some("b"));
        assert!(!w.remove("a", now()));
    }

    #[test]
    fn set_default_refuses_unknown_expired_and_gateway_disabled_sources() {
        let mut w = wallet();
        w.save(card("a", "t1", 3, false), 20, now());
        w.save(card("e", "t2", 2, true), 20, now());
        w.save(card("d", "t3", 1, false), 20, now());
        w.sources[2].gateway_enabled = false;
        assert_eq!(
            w.set_default(&id("zz"), now()),
            Err(DefaultRefused::NotFound)
        );
        assert_eq!(w.set_default(&id("e"), now()), Err(DefaultRefused::Expired));
        assert_eq!(
            w.set_default(&id("d"), now()),
            Err(DefaultRefused::NotFound)
        );
        assert_eq!(w.set_default(&id("a"), now()), Ok(()));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Save { token: u8, expired: bool },
        Remove(u8),
        SetDefault(u8),
        Disable(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..12, any::<bool>()).prop_map(|(token, expired)| Op::Save { token, expired }),
            1 => (0u8..12).prop_map(Op::Remove),
            1 => (0u8..12).prop_map(Op::SetDefault),
            1 => (0u8..12).prop_map(Op::Disable),
        ]
    }

    proptest! {
        /// Whatever happens, the cap holds, a card is held once, and the default is
        /// one available source of the wallet (or none when none is available).
        #[test]
        fn the_rules_hold_after_any_sequence_of_changes(ops in prop::collection::vec(op(), 1..60), cap in 1usize..5) {
            let mut w = wallet();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Save { token, expired } => {
                        let mut c = card(&format!("s{step}"), &format!("t{token}"), 0, expired);
                        c.created_at = now() + Duration::seconds(step as i64);
                        w.save(c, cap, now());
                    }
                    Op::Remove(i) => { w.remove(&format!("s{i}"), now()); }
                    Op::SetDefault(i) => { let _ = w.set_default(&id(&format!("s{i}")), now()); }
                    Op::Disable(i) => {
                        if let Some(s) = w.sources.iter_mut().find(|s| s.id.as_str() == format!("s{i}")) {
                            s.gateway_enabled = false;
                        }
                    }
                }
                prop_assert!(w.held(now()) <= cap);
                let mut tokens: Vec<_> = w.sources.iter().map(|s| s.fingerprint.0).collect();
                tokens.sort();
                let before = tokens.len();
                tokens.dedup();
                prop_assert_eq!(tokens.len(), before, "a card held twice");
                let default = w.default_source(now());
                let any_available = w.sources.iter().any(|s| s.is_available(now()));
                prop_assert_eq!(default.is_some(), any_available);
                if let Some(d) = default {
                    prop_assert!(d.is_available(now()));
                }
            }
        }
    }
}
