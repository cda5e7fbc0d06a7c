//! Replay: republish with confirms, then ack; never the other way round. Republishes go
//! out in small batches whose confirms are awaited together, so a long replay is not
//! one round trip per message; a batch is about a second's worth under `--rate`.

use super::scan::{Scan, Tag};
use super::{DeadLetterEntry, DlqError, IdsSeen, Selection, with_pass};
use crate::broker::headers;
use crate::broker::publish::{PublishError, check};
use crate::broker::topology::Topology;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, PublisherConfirm};
use std::time::Duration;
use tokio::time::Instant;

/// Republishes whose confirms are awaited together at most.
const BATCH: usize = 64;

/// How a replay runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed; publish and ack nothing.
    pub dry_run: bool,
    /// Republishes per second at most; as fast as confirms come without it.
    pub rate: Option<f64>,
    /// Test hook: behave as if the process died right after the broker confirmed this
    /// many republishes, before the last of them was acked.
    pub crash_after_confirms: Option<u64>,
}

/// What a replay did. The dead letters themselves go to the caller one by one as
/// [`ReplayStep`]s, so a replay of millions keeps none of them.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Ready dead letters when the replay began.
    pub total: u64,
    /// Republished and confirmed (in a dry run: would be).
    pub replayed: u64,
    /// Selected but left in the queue.
    pub failed: u64,
    /// Requested ids that matched no dead letter.
    pub unknown_ids: Vec<String>,
    pub dry_run: bool,
    /// Stopped by [`ReplayOptions::crash_after_confirms`].
    pub interrupted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub message_id: String,
    pub routing_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReplayed {
    pub message_id: String,
    pub reason: String,
}

/// One selected dead letter's fate, in queue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStep {
    Replayed(Replayed),
    /// Left in the queue, with the reason.
    Failed(NotReplayed),
}

/// Republishes the selected dead letters to `topology.exchange` under their original
/// routing key, `x-wallet-*` and dead-letter headers removed (attempts start again),
/// and acks each only once the broker confirmed it. The rest stay where they were.
pub async fn replay(
    connection: &Connection,
    topology: &Topology,
    selection: &Selection,
    options: ReplayOptions,
    mut on_step: impl FnMut(ReplayStep),
) -> Result<ReplayReport, DlqError> {
    let publish = connection.create_channel().await?;
    if !options.dry_run {
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let run = Run {
        publish: &publish,
        exchange: &topology.exchange,
        options,
        started: Instant::now(),
    };
    let removing = !options.dry_run;
    let result = with_pass(
        connection,
        topology,
        removing,
        async |scan: &mut Scan<'_>| run.pass(scan, selection, &mut on_step).await,
    )
    .await;
    let _ = publish.close(200, "replayed".into()).await;
    result
}

struct Run<'a> {
    publish: &'a Channel,
    exchange: &'a str,
    options: ReplayOptions,
    started: Instant,
}

/// A selected dead letter on its way.
struct Pending {
    entry: DeadLetterEntry,
    tag: Tag,
    routing_key: String,
}

impl Run<'_> {
    async fn pass(
        &self,
        scan: &mut Scan<'_>,
        selection: &Selection,
        on_step: &mut impl FnMut(ReplayStep),
    ) -> Result<ReplayReport, DlqError> {
        let mut report = ReplayReport {
            total: scan.depth(),
            dry_run: self.options.dry_run,
            ..ReplayReport::default()
        };
        let mut ids = IdsSeen::new(selection);
        let mut batch = Vec::new();
        while let Some((entry, tag)) = scan.next().await? {
            ids.saw(&entry);
            if !selection.matches(&entry) {
                continue;
            }
            let Some(routing_key) = entry.routing_key.clone() else {
                report.failed += 1;
                on_step(ReplayStep::Failed(NotReplayed {
                    message_id: entry.message_id,
                    reason: "no original routing key or envelope type".to_owned(),
                }));
                continue;
            };
            if self.options.dry_run {
                report.replayed += 1;
                on_step(ReplayStep::Replayed(Replayed {
                    message_id: entry.message_id,
                    routing_key,
                }));
                continue;
            }
            batch.push(Pending {
                entry,
                tag,
                routing_key,
            });
            if batch.len() >= self.batch_size(report.replayed) {
                self.settle(scan, &mut batch, &mut report, on_step).await?;
                if report.interrupted {
                    break;
                }
            }
        }
        if !report.interrupted {
            self.settle(scan, &mut batch, &mut report, on_step).await?;
        }
        scan.settled().await?;
        report.unknown_ids = ids.unknown();
        Ok(report)
    }

    /// About a second's worth under a rate, and never past the crash hook's count.
    fn batch_size(&self, replayed: u64) -> usize {
        let by_rate = self.options.rate.map_or(BATCH, |rate| rate.ceil() as usize);
        let by_crash = self.options.crash_after_confirms.map_or(usize::MAX, |n| {
            usize::try_from(n.saturating_sub(replayed)).unwrap_or(usize::MAX)
        });
        by_rate.min(by_crash).clamp(1, BATCH)
    }

    /// Republishes the batch, waits for every confirm, and acks the confirmed ones.
    async fn settle(
        &self,
        scan: &mut Scan<'_>,
        batch: &mut Vec<Pending>,
        report: &mut ReplayReport,
        on_step: &mut impl FnMut(ReplayStep),
    ) -> Result<(), DlqError> {
        let mut confirms = Vec::with_capacity(batch.len());
        for (i, pending) in batch.iter().enumerate() {
            self.pace(report.replayed + i as u64).await;
            confirms.push(self.republish(pending).await);
        }
        for (pending, confirm) in batch.drain(..).zip(confirms) {
            let confirmed = match confirm {
                Ok(confirm) => confirm
                    .await
                    .map_err(PublishError::from)
                    .and_then(|c| check(c, &pending.routing_key)),
                Err(err) => Err(PublishError::Broker(err)),
            };
            let message_id = pending.entry.message_id;
            match confirmed {
                Ok(()) => {
                    report.replayed += 1;
                    if self.options.crash_after_confirms == Some(report.replayed) {
                        report.interrupted = true;
                    } else {
                        scan.ack(pending.tag)?;
                    }
                    on_step(ReplayStep::Replayed(Replayed {
                        message_id,
                        routing_key: pending.routing_key,
                    }));
                    if report.interrupted {
                        return Ok(());
                    }
                }
                Err(PublishError::Broker(source)) => {
                    return Err(DlqError::Interrupted {
                        replayed: report.replayed,
                        source: PublishError::Broker(source),
                    });
                }
                Err(refused) => {
                    report.failed += 1;
                    let reason = refused.to_string();
                    on_step(ReplayStep::Failed(NotReplayed { message_id, reason }));
                }
            }
        }
        Ok(())
    }

    /// Waits until the `n`-th republish (0-based) is due under the rate.
    async fn pace(&self, n: u64) {
        if let Some(rate) = self.options.rate.filter(|r| *r > 0.0) {
            let due = self.started + Duration::from_secs_f64(n as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
    }

    async fn republish(&self, pending: &Pending) -> lapin::Result<PublisherConfirm> {
        let properties = &pending.entry.properties;
        let properties = headers::rebuild(properties, replay_headers(properties), None);
        self.publish
            .basic_publish(
                self.exchange.into(),
                pending.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                pending.entry.raw_body(),
                properties,
            )
            .await
    }
}

/// The headers a replayed message carries: the original ones, without the worker's
/// `x-wallet-*` bookkeeping and the broker's dead-letter history.
fn replay_headers(properties: &lapin::BasicProperties) -> FieldTable {
    let mut inner = properties
        .headers()
        .clone()
        .unwrap_or_default()
        .inner()
        .clone();
    inner.retain(|name: &ShortString, _| {
        let name = name.as_str();
        !(name.starts_with("x-wallet-")
            || name == "x-death"
            || name == "x-delivery-count"
            || name.starts_with("x-first-death-")
            || name.starts_with("x-last-death-"))
    });
    // Marks a message that may already have had its effect (a doubled replay), so the
    // worker checks its inbox before calling the gateway again.
    inner.insert(
        headers::REPLAYED_AT.into(),
        headers::long_string(
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
    );
    FieldTable::from(inner)
}
