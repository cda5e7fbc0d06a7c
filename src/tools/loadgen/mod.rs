//! The load generator behind `loadgen` and `demo` (docs/interface.md, command line): publishes realistic
//! traffic to a running worker, matches each completion event to its message by
//! `causation_id`, and reports throughput and latency percentiles. The CLI, the demo,
//! the tests and benchmarks all call [`run`].

mod message;
mod report;
mod session;
mod timeline;
mod tracker;
mod traffic;

pub use message::Message;
pub use report::{Latency, Report, SavedSource};
pub use session::{COMPLETION_EVENTS, Session};
pub use timeline::{MAX_POINTS as TIMELINE_MAX_POINTS, Point as TimelinePoint};
pub use traffic::attach_data;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;
use traffic::{Plan, Traffic};

/// What to publish, where, and how long to wait.
#[derive(Debug, Clone)]
pub struct LoadgenConfig {
    pub amqp_url: String,
    pub exchange: String,
    /// Messages to publish.
    pub count: u64,
    /// Messages per second; as fast as the broker confirms when `None`.
    pub rate: Option<f64>,
    /// Probability that a placed order asks to save its payment source.
    pub save_ratio: f64,
    /// The gateway the orders pay with; it must be registered with the worker.
    pub gateway_id: String,
    /// How long to wait for the completions once everything is published.
    pub timeout: Duration,
    /// Decides the shape of the traffic; the same seed, the same mix.
    pub seed: u64,
}

impl LoadgenConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.count == 0 {
            bail!("--count must be at least 1");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            bail!("--rate must be a positive number of messages per second");
        }
        if !(0.0..=1.0).contains(&self.save_ratio) {
            bail!("--save-ratio must be between 0 and 1");
        }
        if self.gateway_id.is_empty() {
            bail!("--gateway-id must not be empty");
        }
        Ok(())
    }
}

/// Publishes `config.count` messages, waits for their completions and reports. With
/// `progress`, draws a progress bar on stderr when it is a terminal.
pub async fn run(config: LoadgenConfig, progress: bool) -> anyhow::Result<Report> {
    config.validate()?;
    let run_id = format!("lg-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let session = Session::open(&config.amqp_url, &config.exchange, &run_id).await?;
    let mut traffic = Traffic::new(
        &run_id,
        config.seed,
        config.count,
        &config.gateway_id,
        config.save_ratio,
    );
    let bar = progress_bar(config.count, progress);
    let ticker = tokio::spawn({
        let (bar, tracker) = (bar.clone(), session.progress_handle());
        async move {
            loop {
                bar.set_position(tracker.settled());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let outcome = publish_all(&config, &session, &mut traffic).await;
    let report = match outcome {
        Ok(waited) => {
            session
                .finish(config.timeout.saturating_sub(waited), config.seed)
                .await
        }
        Err(err) => Err(err),
    };
    ticker.abort();
    match &report {
        Ok(r) if r.is_complete() => bar.finish_and_clear(),
        _ => bar.abandon(),
    }
    report
}

/// Publishes every message at the configured rate. A message whose dependency is not
/// met yet (an attach before any source was saved, a save before its order was
/// recorded) is held back and sent once it is, so the worker sees causes before
/// effects whatever the rate. Returns how long that took out of the timeout.
async fn publish_all(
    config: &LoadgenConfig,
    session: &Session,
    traffic: &mut Traffic,
) -> anyhow::Result<Duration> {
    let mut pace = Pace::new(config.rate);
    let mut held = Vec::new();
    for _ in 0..config.count {
        let plan = traffic.plan();
        match build(plan, session, traffic) {
            Some(message) => pace.publish(session, &message).await?,
            None => held.push(plan),
        }
    }
    let waiting = Instant::now();
    for plan in held {
        let message = loop {
            if let Some(message) = build(plan, session, traffic) {
                break message;
            }
            // Nothing in flight can satisfy it any more: send a placed order instead.
            let needs_a_source = matches!(
                plan,
                Plan::Attach { .. } | Plan::SetDefault { .. } | Plan::Remove { .. }
            );
            let hopeless = needs_a_source && session.pending() == 0;
            if hopeless || waiting.elapsed() >= config.timeout {
                break traffic.placed();
            }
            session.next_answer(Duration::from_millis(100)).await;
        };
        pace.publish(session, &message).await?;
    }
    Ok(waiting.elapsed())
}

fn build(plan: Plan, session: &Session, traffic: &mut Traffic) -> Option<Message> {
    match plan {
        Plan::Attach { pick } => session
            .saved_source(pick)
            .map(|source| traffic.attach(source)),
        Plan::SetDefault { pick } => session
            .saved_source(pick)
            .map(|source| traffic.wallet_change("wallet.set_default", source)),
        Plan::Remove { pick } => session
            .saved_source(pick)
            .map(|source| traffic.wallet_change("wallet.remove", source)),
        Plan::LateSave if !traffic.has_flagless() => Some(traffic.placed()),
        Plan::LateSave => traffic.late_save(session.answered_up_to()),
        Plan::Placed => Some(traffic.placed()),
    }
}

/// Spaces publishes `1/rate` apart from the start (no drift), or not at all.
struct Pace {
    rate: Option<f64>,
    started: Instant,
    sent: u64,
}

impl Pace {
    fn new(rate: Option<f64>) -> Self {
        Self {
            rate,
            started: Instant::now(),
            sent: 0,
        }
    }

    async fn publish(&mut self, session: &Session, message: &Message) -> anyhow::Result<()> {
        if let Some(rate) = self.rate {
            let due = self.started + Duration::from_secs_f64(self.sent as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        self.sent += 1;
        session.publish(message).await
    }
}

/// A bar over all messages (answered, fire-and-forget or failed), hidden when stderr is
/// not a terminal so logs and pipes stay clean.
fn progress_bar(len: u64, wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} {bar:40} {pos}/{len} settled  {per_sec}  {elapsed}",
    )
    .expect("a valid template");
    ProgressBar::new(len).with_style(style)
}
