//! `dlq summary`: counts by error kind and by type, and the oldest and newest dead
//! letter, in one pass that keeps no body.

use super::scan::Scan;
use super::{DeadLetterEntry, DlqError, with_pass};
use crate::broker::topology::Topology;
use chrono::{DateTime, Utc};
use lapin::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

/// Distinct keys one count keeps; the rest are added up under [`OTHER`], so a queue
/// full of distinct made-up types cannot grow the summary without bound.
pub const MAX_KEYS: usize = 1000;
/// The key of dead letters past [`MAX_KEYS`] distinct keys.
pub const OTHER: &str = "(other)";
/// The key of dead letters that say nothing about it.
pub const UNKNOWN: &str = "unknown";

/// The contract's `dlq summary --json` shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: u64,
    pub by_error: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    /// `x-wallet-dead-lettered-at` of the earliest dead letter (for one the broker
    /// made, its `x-death` time).
    pub oldest: Option<String>,
    pub newest: Option<String>,
    #[serde(skip)]
    range: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Summary {
    fn add(&mut self, entry: &DeadLetterEntry) {
        self.total += 1;
        bump(&mut self.by_error, entry.error.as_deref());
        bump(&mut self.by_type, entry.routing_key.as_deref());
        let Some(at) = entry.dead_lettered_time() else {
            return;
        };
        let (oldest, newest) = self.range.get_or_insert((at, at));
        if at < *oldest || self.oldest.is_none() {
            *oldest = at;
            self.oldest.clone_from(&entry.dead_lettered_at);
        }
        if at > *newest || self.newest.is_none() {
            *newest = at;
            self.newest.clone_from(&entry.dead_lettered_at);
        }
    }
}

fn bump(counts: &mut BTreeMap<String, u64>, key: Option<&str>) {
    let key = key.unwrap_or(UNKNOWN);
    if let Some(n) = counts.get_mut(key) {
        *n += 1;
    } else if counts.len() < MAX_KEYS {
        counts.insert(key.to_owned(), 1);
    } else {
        *counts.entry(OTHER.to_owned()).or_default() += 1;
    }
}

/// Reads the whole queue once and leaves it as it was.
pub async fn summary(connection: &Connection, topology: &Topology) -> Result<Summary, DlqError> {
    with_pass(connection, topology, false, async |scan: &mut Scan<'_>| {
        let mut summary = Summary::default();
        while let Some((entry, _)) = scan.next().await? {
            summary.add(&entry);
        }
        Ok(summary)
    })
    .await
}
