//! What a load test measured, as one JSON object for scripts or a short table for people.

use super::timeline::Point;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Prefix of this run's message ids (`lg-…`): find them in logs or dead letters.
    pub run_id: String,
    /// Replays the same shape of traffic with `--seed`.
    pub seed: u64,
    /// Messages the broker confirmed.
    pub published: u64,
    pub published_by_type: BTreeMap<String, u64>,
    /// Messages the broker refused (nack) or could not route.
    pub publish_failed: u64,
    /// Confirmed messages the worker answers with an event.
    pub expected: u64,
    pub completed_total: u64,
    /// Completion events by type (`wallet.saved`, ...).
    pub completed: BTreeMap<String, u64>,
    /// Expected events that did not arrive before the timeout.
    pub missing: u64,
    /// Up to ten of them, to look for in the logs or the dead-letter queue.
    pub missing_ids: Vec<String>,
    /// Placed orders without the save flag: recorded silently, so not in the latency.
    pub unacknowledged_by_design: u64,
    /// `wallet.saved` with `created: true` / `false` (an existing source reused).
    pub saved_created: u64,
    pub saved_reused: u64,
    /// `save_failed: guest_customer`, `attach_rejected: not_found`, ...
    pub refusals: BTreeMap<String, u64>,
    /// Events for a message already answered (a worker that is not idempotent).
    pub duplicates: u64,
    /// From the first to the last publish.
    pub publish_seconds: f64,
    /// From the first publish to the last completion: the throughput window.
    pub window_seconds: f64,
    /// Completions per second over that window.
    pub throughput_per_sec: f64,
    /// Publish to event receipt.
    pub latency_ms: Latency,
    /// The run second by second, for the HTML report (`--report`); not in the JSON.
    #[serde(skip)]
    pub timeline: Vec<Point>,
    /// Seconds each timeline point spans: 1, or more for runs past 15 minutes.
    #[serde(skip)]
    pub timeline_step_secs: u64,
    /// Sources saved during the run (for follow-up messages; not printed).
    #[serde(skip)]
    pub saved_sources: Vec<SavedSource>,
}

/// A source the worker saved during the run, from its `wallet.saved` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSource {
    pub customer_id: String,
    pub source_id: String,
}

/// Latency percentiles in milliseconds (0 when nothing completed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub(crate) fn from_histogram(micros: &Histogram<u64>) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| (us as f64 / 100.0).round() / 10.0;
        Self {
            p50: ms(micros.value_at_quantile(0.50)),
            p90: ms(micros.value_at_quantile(0.90)),
            p99: ms(micros.value_at_quantile(0.99)),
            max: ms(micros.max()),
        }
    }
}

impl Report {
    /// Whether every expected completion arrived and every message was published.
    pub fn is_complete(&self) -> bool {
        self.missing == 0 && self.publish_failed == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by_type = join(&self.published_by_type);
        writeln!(
            f,
            "published    {:>7}  in {:.2} s  ({by_type})",
            self.published, self.publish_seconds
        )?;
        if self.publish_failed > 0 {
            writeln!(
                f,
                "not published{:>7}  (refused or unroutable)",
                self.publish_failed
            )?;
        }
        writeln!(
            f,
            "completed    {:>7}  of {} expected, {} missing",
            self.completed_total, self.expected, self.missing
        )?;
        for (kind, n) in &self.completed {
            let detail = match kind.as_str() {
                "wallet.saved" => format!(
                    "  (created {}, reused {})",
                    self.saved_created, self.saved_reused
                ),
                _ => String::new(),
            };
            writeln!(f, "  {kind:<24}{n:>7}{detail}")?;
        }
        writeln!(
            f,
            "  {:<24}{:>7}  (orders placed without the save flag)",
            "no event by design", self.unacknowledged_by_design
        )?;
        if !self.refusals.is_empty() {
            writeln!(f, "refusals     {}", join(&self.refusals))?;
        }
        if self.duplicates > 0 {
            writeln!(
                f,
                "duplicates   {:>7}  events for messages already answered",
                self.duplicates
            )?;
        }
        writeln!(
            f,
            "throughput   {:>7.1}  completions/s over {:.2} s",
            self.throughput_per_sec, self.window_seconds
        )?;
        let l = self.latency_ms;
        write!(
            f,
            "latency ms   p50 {}  p90 {}  p99 {}  max {}",
            l.p50, l.p90, l.p99, l.max
        )?;
        if !self.missing_ids.is_empty() {
            write!(f, "\nmissing e.g. {}", self.missing_ids.join(", "))?;
        }
        Ok(())
    }
}

fn join(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
