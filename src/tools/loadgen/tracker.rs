//! Completion tracking: which published messages still await their event, and what the
//! events said. The publisher registers expectations before it publishes (so an event
//! can never arrive first), the event consumer matches events by `causation_id`.

use super::report::{Latency, Report, SavedSource};
use super::timeline::Timeline;
use hdrhistogram::Histogram;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

/// Shared between the publisher, the confirm task and the event consumer.
pub(crate) struct Tracker {
    /// Prefix of this run's message ids: tells a duplicate event from other traffic.
    run: String,
    state: Mutex<State>,
    /// Woken on every completion, so waiting ends as soon as the last one arrives.
    pub changed: Notify,
}

struct State {
    /// Message id → when it was published and its place in the publish order.
    pending: HashMap<String, (Instant, u64)>,
    /// The highest publish position answered so far.
    answered_up_to: u64,
    first_publish: Option<Instant>,
    last_publish: Option<Instant>,
    last_completion: Option<Instant>,
    /// Microseconds from publish to event receipt.
    latency: Histogram<u64>,
    /// The same, and the confirms, second by second.
    timeline: Timeline,
    published: BTreeMap<String, u64>,
    publish_failed: u64,
    fire_and_forget: u64,
    completed: BTreeMap<String, u64>,
    refusals: BTreeMap<String, u64>,
    saved_created: u64,
    saved_reused: u64,
    duplicates: u64,
    saved: Vec<SavedSource>,
}

impl State {
    /// Counts what a completion event of this run says: a save (new or reused, and the
    /// source for follow-up messages), a removal, or a refusal by reason.
    fn tally(&mut self, routing_key: &str, data: &Value) {
        match routing_key {
            "wallet.saved" => {
                if data["created"] == true {
                    self.saved_created += 1;
                } else {
                    self.saved_reused += 1;
                }
                if let (Some(customer), Some(source)) = (
                    data["customer_id"].as_str(),
                    data["customer_payment_source"]["id"].as_str(),
                ) {
                    self.saved.push(SavedSource {
                        customer_id: customer.to_owned(),
                        source_id: source.to_owned(),
                    });
                }
            }
            "wallet.removed" => {
                // A removed source is not attached or changed again by this run.
                if let Some(source) = data["customer_payment_source_id"].as_str() {
                    self.saved.retain(|saved| saved.source_id != source);
                }
            }
            "wallet.dead_lettered" => {
                let error = data["error"].as_str().unwrap_or("unknown");
                *self
                    .refusals
                    .entry(format!("dead_lettered: {error}"))
                    .or_default() += 1;
            }
            "wallet.save_failed"
            | "wallet.attach_rejected"
            | "wallet.remove_rejected"
            | "wallet.default_rejected" => {
                let reason = data["reason"].as_str().unwrap_or("unknown");
                let verb = routing_key.trim_start_matches("wallet.");
                *self
                    .refusals
                    .entry(format!("{verb}: {reason}"))
                    .or_default() += 1;
            }
            _ => {}
        }
    }
}

impl Tracker {
    pub fn new(run: &str) -> Self {
        Self {
            run: run.to_owned(),
            state: Mutex::new(State {
                pending: HashMap::new(),
                answered_up_to: 0,
                first_publish: None,
                last_publish: None,
                last_completion: None,
                latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("valid histogram bounds"),
                timeline: Timeline::new(),
                published: BTreeMap::new(),
                publish_failed: 0,
                fire_and_forget: 0,
                completed: BTreeMap::new(),
                refusals: BTreeMap::new(),
                saved_created: 0,
                saved_reused: 0,
                duplicates: 0,
                saved: Vec::new(),
            }),
            changed: Notify::new(),
        }
    }

    /// Called just before publishing `id`.
    pub fn publishing(&self, id: &str, seq: u64, expects_event: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        state.first_publish.get_or_insert(now);
        state.timeline.started(now);
        state.last_publish = Some(now);
        if expects_event {
            state.pending.insert(id.to_owned(), (now, seq));
        }
    }

    /// The broker confirmed the message.
    pub fn confirmed(&self, routing_key: &str, expects_event: bool) {
        let mut state = self.lock();
        *state.published.entry(routing_key.to_owned()).or_default() += 1;
        state.timeline.published(Instant::now());
        if !expects_event {
            state.fire_and_forget += 1;
        }
        drop(state);
        self.changed.notify_waiters();
    }

    /// The broker refused or could not route the message: nothing will answer it.
    pub fn failed(&self, id: &str) {
        let mut state = self.lock();
        state.pending.remove(id);
        state.publish_failed += 1;
        drop(state);
        self.changed.notify_waiters();
    }

    /// An event arrived on the completion queue.
    pub fn event(&self, routing_key: &str, body: &[u8]) {
        let now = Instant::now();
        let Ok(event) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let cause = event["causation_id"].as_str().unwrap_or_default();
        let mut state = self.lock();
        let Some((published_at, seq)) = state.pending.remove(cause) else {
            if cause.starts_with(&self.run) {
                state.duplicates += 1;
            }
            return;
        };
        let micros =
            u64::try_from(now.duration_since(published_at).as_micros()).unwrap_or(u64::MAX);
        state.latency.saturating_record(micros.max(1));
        state.timeline.completed(now, micros);
        state.last_completion = Some(now);
        state.answered_up_to = state.answered_up_to.max(seq);
        *state.completed.entry(routing_key.to_owned()).or_default() += 1;
        state.tally(routing_key, &event["data"]);
        drop(state);
        self.changed.notify_waiters();
    }

    /// One of the sources saved so far, chosen by `pick`.
    pub fn saved_source(&self, pick: u64) -> Option<SavedSource> {
        let state = self.lock();
        let len = state.saved.len() as u64;
        (len > 0).then(|| state.saved[(pick % len) as usize].clone())
    }

    /// The highest publish position answered so far (0 before the first answer).
    pub fn answered_up_to(&self) -> u64 {
        self.lock().answered_up_to
    }

    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Messages whose story is over: answered, fire-and-forget, or failed to publish.
    pub fn settled(&self) -> u64 {
        let state = self.lock();
        state.completed.values().sum::<u64>() + state.fire_and_forget + state.publish_failed
    }

    pub fn report(&self, seed: u64) -> Report {
        let state = self.lock();
        let completed_total: u64 = state.completed.values().sum();
        let missing = state.pending.len() as u64;
        let window = match (state.first_publish, state.last_completion) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let publishing = match (state.first_publish, state.last_publish) {
            (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let mut missing_ids: Vec<String> = state.pending.keys().cloned().collect();
        missing_ids.sort();
        missing_ids.truncate(10);
        Report {
            run_id: self.run.clone(),
            seed,
            published: state.published.values().sum(),
            published_by_type: state.published.clone(),
            publish_failed: state.publish_failed,
            expected: completed_total + missing,
            completed_total,
            completed: state.completed.clone(),
            missing,
            missing_ids,
            unacknowledged_by_design: state.fire_and_forget,
            saved_created: state.saved_created,
            saved_reused: state.saved_reused,
            refusals: state.refusals.clone(),
            duplicates: state.duplicates,
            publish_seconds: publishing,
            window_seconds: window,
            throughput_per_sec: if window > 0.0 {
                completed_total as f64 / window
            } else {
                0.0
            },
            latency_ms: Latency::from_histogram(&state.latency),
            timeline: state.timeline.points(),
            timeline_step_secs: state.timeline.step(),
            saved_sources: state.saved.clone(),
        }
    }

    /// A panic elsewhere cannot leave counters half-updated in a harmful way.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
