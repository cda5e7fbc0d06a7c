//! Jepsen-style accounting for the fault tests: what was published, what completed,
//! what was lost and what had its effect twice.

use crate::helpers::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Ledger {
    /// Inbound message id → the distinct event ids it caused.
    effects: HashMap<String, HashSet<String>>,
    /// Event deliveries seen more than once (same event id): at-least-once publication,
    /// absorbed by consumers deduplicating on the event id.
    pub redelivered_events: usize,
}

impl Ledger {
    /// Collects events until every id in `published` has one, or `within` passes.
    pub async fn collect(w: &mut TestWorker, published: &[String], within: Duration) -> Ledger {
        let mut ledger = Ledger::default();
        let wanted: HashSet<&String> = published.iter().collect();
        let deadline = tokio::time::Instant::now() + within;
        while ledger.completed_of(published) < published.len()
            && tokio::time::Instant::now() < deadline
        {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(event) = w.next_event_within(left).await else {
                break;
            };
            let cause = event.body["causation_id"].as_str().unwrap_or("").to_owned();
            let event_id = event.body["id"].as_str().unwrap_or("").to_owned();
            if !wanted.contains(&cause) {
                continue;
            }
            ledger.record(cause, event_id);
        }
        ledger
    }

    /// Records that event `event_id` was caused by message `cause`.
    pub fn record(&mut self, cause: String, event_id: String) {
        if !self.effects.entry(cause).or_default().insert(event_id) {
            self.redelivered_events += 1;
        }
    }

    /// Messages with at least one effect.
    pub fn completed(&self) -> usize {
        self.effects.len()
    }

    /// Messages of `published` with at least one effect.
    pub fn completed_of(&self, published: &[String]) -> usize {
        published
            .iter()
            .filter(|id| self.effects.contains_key(*id))
            .count()
    }

    /// Prints the accounting line and returns (lost, duplicated effects).
    pub fn report(&self, name: &str, published: &[String]) -> (usize, usize) {
        self.report_with(name, published, "")
    }

    /// [`Self::report`], with `detail` (what the fault was) at the end of the line.
    pub fn report_with(&self, name: &str, published: &[String], detail: &str) -> (usize, usize) {
        let completed = self.completed_of(published);
        let lost = published.len() - completed;
        let duplicated = self
            .effects
            .values()
            .filter(|events| events.len() > 1)
            .count();
        println!(
            "[{name}] published={} completed={completed} lost={lost} duplicated_effects={duplicated} redelivered_events={}{}{detail}",
            published.len(),
            self.redelivered_events,
            if detail.is_empty() { "" } else { " " },
        );
        (lost, duplicated)
    }
}
