//! Live figures for the console, from the metrics the worker already records: every
//! [`INTERVAL`] the Prometheus text is rendered and the few families the console shows
//! are kept, [`KEPT`] samples at most (two minutes), so rates and latency percentiles
//! over the last minute are differences between two samples. Memory is bounded by the
//! window and by the label values, which the metrics keep bounded themselves.

use crate::domain::MessageType;
use crate::metrics as m;
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Between two samples.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples kept: two minutes of them, for the throughput chart.
const KEPT: usize = 61;
/// Samples the rates and percentiles span: the last minute.
const RATE_SPAN: usize = 31;

/// The recent samples; the sampler task holds it weakly and stops once the console
/// (the admin server) is gone.
#[derive(Default)]
pub struct Window {
    samples: Mutex<VecDeque<Sample>>,
}

impl Window {
    /// Takes a first sample now and keeps sampling in the background.
    pub fn start(handle: PrometheusHandle) -> Arc<Self> {
        let window = Arc::new(Self::default());
        window.record(Sample::of(&handle.render(), Instant::now()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&window);
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(INTERVAL);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    let Some(window) = weak.upgrade() else {
                        return;
                    };
                    window.record(Sample::of(&handle.render(), Instant::now()));
                }
            });
        }
        window
    }

    fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// What the console shows now.
    pub fn now(&self) -> Live {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        Live::of(samples.make_contiguous())
    }
}

/// The families the console shows, from one rendering of `/metrics`.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: Option<Instant>,
    /// `wallet_messages_total` by (type, outcome).
    messages: BTreeMap<(String, String), f64>,
    /// `wallet_message_seconds_bucket` by type: (upper bound, cumulative count).
    latency: BTreeMap<String, Vec<(f64, f64)>>,
    in_flight: f64,
    outbox_backlog: f64,
    dlq_depth: Option<f64>,
    /// `wallet_dead_letters_total` by kind.
    dead_letters: BTreeMap<String, f64>,
}

impl Sample {
    fn of(text: &str, at: Instant) -> Self {
        let mut sample = Self {
            at: Some(at),
            ..Self::default()
        };
        for line in text.lines().filter(|l| l.starts_with("wallet_")) {
            let Some((name, labels, value)) = parse_line(line) else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            };
            match name {
                m::MESSAGES => {
                    if let (Some(kind), Some(outcome)) = (label("type"), label("outcome")) {
                        *sample.messages.entry((kind, outcome)).or_default() += value;
                    }
                }
                "wallet_message_seconds_bucket" => {
                    let le = label("le").and_then(|le| parse_value(&le));
                    if let (Some(kind), Some(le)) = (label("type"), le) {
                        sample.latency.entry(kind).or_default().push((le, value));
                    }
                }
                m::IN_FLIGHT => sample.in_flight = value,
                m::OUTBOX_BACKLOG => sample.outbox_backlog = value,
                m::DLQ_DEPTH => sample.dlq_depth = Some(value),
                m::DEAD_LETTERS => {
                    if let Some(kind) = label("kind") {
                        *sample.dead_letters.entry(kind).or_default() += value;
                    }
                }
                _ => {}
            }
        }
        for buckets in sample.latency.values_mut() {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        sample
    }

    fn total_messages(&self) -> f64 {
        self.messages.values().sum()
    }
}

/// One message type over the last minute.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeLive {
    pub kind: String,
    /// Messages settled per second.
    pub rate: f64,
    /// Delivery-to-settlement latency in milliseconds; `None` without traffic.
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Since the worker started, by outcome (`saved`, `dead_lettered`, ...).
    pub outcomes: Vec<(String, u64)>,
}

/// The console's live figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Live {
    /// Seconds the rates span (up to a minute; less just after a start).
    pub span_secs: f64,
    /// Messages settled per second, all types.
    pub rate: f64,
    pub by_type: Vec<TypeLive>,
    pub in_flight: f64,
    pub outbox_backlog: f64,
    /// `None` until the worker sampled the dead-letter queue.
    pub dlq_depth: Option<f64>,
    /// Dead letters written since the worker started, by kind.
    pub dead_letters: Vec<(String, u64)>,
    /// (seconds before now, messages per second) for each interval of the window.
    pub throughput: Vec<(f64, f64)>,
}

impl Live {
    fn of(samples: &[Sample]) -> Self {
        let Some(newest) = samples.last() else {
            return Self::default();
        };
        let oldest = &samples[samples.len().saturating_sub(RATE_SPAN)];
        let span = seconds_between(oldest, newest);
        let settled = (newest.total_messages() - oldest.total_messages()).max(0.0);
        Self {
            span_secs: span,
            rate: per_second(settled, span),
            by_type: kinds(newest)
                .into_iter()
                .map(|kind| TypeLive::between(oldest, newest, span, kind))
                .collect(),
            in_flight: newest.in_flight,
            outbox_backlog: newest.outbox_backlog,
            dlq_depth: newest.dlq_depth,
            dead_letters: newest
                .dead_letters
                .iter()
                .map(|(kind, n)| (kind.clone(), *n as u64))
                .collect(),
            throughput: throughput(samples),
        }
    }
}

impl TypeLive {
    /// `kind`'s rate and latency between two samples `span` seconds apart, and its
    /// outcomes so far.
    fn between(oldest: &Sample, newest: &Sample, span: f64, kind: String) -> Self {
        let settled = |s: &Sample| -> f64 {
            s.messages
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|(_, n)| n)
                .sum()
        };
        let buckets = bucket_deltas(oldest.latency.get(&kind), newest.latency.get(&kind));
        let ms = |q: f64| quantile(q, &buckets).map(|s| s * 1000.0);
        Self {
            rate: per_second((settled(newest) - settled(oldest)).max(0.0), span),
            p50: ms(0.50),
            p95: ms(0.95),
            p99: ms(0.99),
            outcomes: newest
                .messages
                .iter()
                .filter(|((k, _), n)| *k == kind && **n > 0.0)
                .map(|((_, outcome), n)| (outcome.clone(), *n as u64))
                .collect(),
            kind,
        }
    }
}

/// The inbound message types, then any other type the newest sample counted.
fn kinds(newest: &Sample) -> Vec<String> {
    let mut kinds: Vec<String> = MessageType::NAMES.iter().map(|k| (*k).to_owned()).collect();
    for (kind, _) in newest.messages.keys() {
        if !kinds.contains(kind) {
            kinds.push(kind.clone());
        }
    }
    kinds
}

/// (seconds before the newest sample, messages per second) for each interval.
fn throughput(samples: &[Sample]) -> Vec<(f64, f64)> {
    let now = samples.last().and_then(|newest| newest.at);
    samples
        .windows(2)
        .map(|pair| {
            let secs = seconds_between(&pair[0], &pair[1]);
            let delta = (pair[1].total_messages() - pair[0].total_messages()).max(0.0);
            let ago = match (now, pair[1].at) {
                (Some(now), Some(at)) => now.duration_since(at).as_secs_f64(),
                _ => 0.0,
            };
            (-ago, per_second(delta, secs))
        })
        .collect()
}

fn per_second(delta: f64, secs: f64) -> f64 {
    if secs > 0.0 { delta / secs } else { 0.0 }
}

fn seconds_between(a: &Sample, b: &Sample) -> f64 {
    match (a.at, b.at) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

/// Cumulative bucket counts gained between two samples, by upper bound.
fn bucket_deltas(old: Option<&Vec<(f64, f64)>>, new: Option<&Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    let Some(new) = new else {
        return Vec::new();
    };
    new.iter()
        .map(|(le, count)| {
            let before = old
                .and_then(|old| old.iter().find(|(l, _)| l == le))
                .map_or(0.0, |(_, c)| *c);
            (*le, (count - before).max(0.0))
        })
        .collect()
}

/// The `q` quantile of cumulative buckets, interpolated within its bucket as
/// Prometheus' `histogram_quantile` does; `None` without observations.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            if *count <= below {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        (lower, below) = (*le, *count);
    }
    Some(lower)
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",...} value` → its parts; `None` for what is not a sample line.
fn parse_line(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(rest) => parse_labels(rest)?,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?;
    Some((name, labels, parse_value(value)?))
}

/// The labels up to the closing brace, and what follows it.
fn parse_labels(mut rest: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"# TYPE wallet_messages_total counter
wallet_messages_total{type="wallet.save",outcome="saved"} 10
wallet_messages_total{type="order.placed",outcome="recorded"} 4
wallet_message_seconds_bucket{type="wallet.save",le="0.01"} 5
wallet_message_seconds_bucket{type="wallet.save",le="0.1"} 9
wallet_message_seconds_bucket{type="wallet.save",le="+Inf"} 10
wallet_deliveries_in_flight 3
wallet_dlq_depth{queue="q.dlq"} 2
wallet_dead_letters_total{kind="malformed"} 1
"#;

    #[test]
    fn labels_with_escapes_are_read() {
        let (name, labels, value) = parse_line(r#"x{a="1\"2",b="c\\d"} 1.5"#).unwrap();
        assert_eq!(name, "x");
        assert_eq!(labels[0], ("a".into(), "1\"2".into()));
        assert_eq!(labels[1], ("b".into(), "c\\d".into()));
        assert_eq!(value, 1.5);
        assert_eq!(parse_line("wallet_ready 1").unwrap().2, 1.0);
    }

    #[test]
    fn rates_and_percentiles_come_from_the_difference_of_two_samples() {
        let start = Instant::now();
        let first = Sample::of("", start);
        let second = Sample::of(RENDERED, start + Duration::from_secs(2));
        let live = Live::of(&[first, second]);
        assert_eq!(live.span_secs, 2.0);
        assert_eq!(live.rate, 7.0);
        let save = live
            .by_type
            .iter()
            .find(|t| t.kind == "wallet.save")
            .unwrap();
        assert_eq!(save.rate, 5.0);
        assert_eq!(save.outcomes, vec![("saved".to_owned(), 10)]);
        // 5 of 10 at or under 10 ms: the median is the bucket's upper bound.
        assert_eq!(save.p50, Some(10.0));
        assert!(save.p95.unwrap() > 100.0 - 1e-9, "{save:?}");
        let placed = live
            .by_type
            .iter()
            .find(|t| t.kind == "order.placed")
            .unwrap();
        assert_eq!(placed.p50, None);
        assert_eq!(live.in_flight, 3.0);
        assert_eq!(live.dlq_depth, Some(2.0));
        assert_eq!(live.dead_letters, vec![("malformed".to_owned(), 1)]);
        assert_eq!(live.throughput, vec![(0.0, 7.0)]);
    }
}
