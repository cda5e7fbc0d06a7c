//! Replay: republish with confirms, then ack; never the other way round.

use super::held::Held;
use super::{DlqError, Selection};
use crate::broker::headers;
use crate::broker::publish::{PublishError, publish_confirmed};
use crate::broker::topology::Topology;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};

/// How a replay runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Only report what would be replayed; publish and ack nothing.
    pub dry_run: bool,
    /// Test hook: behave as if the process died right after the broker confirmed this
    /// many republishes, before the last of them was acked.
    pub crash_after_confirms: Option<usize>,
}

/// What a replay did, in queue order.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// Dead letters in the queue when the replay read it.
    pub total: usize,
    /// Republished and confirmed (in a dry run: would be).
    pub replayed: Vec<Replayed>,
    /// Selected but left in the queue, with the reason.
    pub failed: Vec<NotReplayed>,
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

/// Republishes the selected dead letters to `topology.exchange` under their original
/// routing key, `x-wallet-*` and dead-letter headers removed (attempts start again),
/// and acks each only once the broker confirmed it. The rest stay where they were.
pub async fn replay(
    connection: &Connection,
    topology: &Topology,
    selection: &Selection,
    options: ReplayOptions,
) -> Result<ReplayReport, DlqError> {
    let held = Held::take(connection, &topology.dead_letter_queue()).await?;
    let result = replay_held(connection, topology, &held, selection, options).await;
    held.release().await;
    result
}

async fn replay_held(
    connection: &Connection,
    topology: &Topology,
    held: &Held,
    selection: &Selection,
    options: ReplayOptions,
) -> Result<ReplayReport, DlqError> {
    let entries = held.entries();
    let mut report = ReplayReport {
        total: entries.len(),
        unknown_ids: selection.unknown_ids(&entries),
        dry_run: options.dry_run,
        ..ReplayReport::default()
    };
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut result = Ok(());
    for (entry, delivery) in entries.iter().zip(&held.deliveries) {
        if !selection.matches(entry) {
            continue;
        }
        let message_id = entry.message_id.clone();
        let Some(routing_key) = entry.routing_key.clone() else {
            let reason = "no original routing key or envelope type".to_owned();
            report.failed.push(NotReplayed { message_id, reason });
            continue;
        };
        if !options.dry_run {
            // The test hook: stop right after this confirm, before the ack.
            let crash = options.crash_after_confirms == Some(report.replayed.len() + 1);
            match replay_one(&publish, topology, held, delivery, &routing_key, crash).await {
                Ok(Step::Acked) => {}
                Ok(Step::Crashed) => report.interrupted = true,
                Err(PublishError::Broker(source)) => {
                    let replayed = report.replayed.len();
                    let source = PublishError::Broker(source);
                    result = Err(DlqError::Interrupted { replayed, source });
                    break;
                }
                Err(refused) => {
                    let reason = refused.to_string();
                    report.failed.push(NotReplayed { message_id, reason });
                    continue;
                }
            }
        }
        report.replayed.push(Replayed {
            message_id,
            routing_key,
        });
        if report.interrupted {
            break;
        }
    }
    let _ = publish.close(200, "replayed".into()).await;
    result.map(|()| report)
}

/// How one replay ended.
enum Step {
    /// Republished, confirmed, then acked off the dead-letter queue.
    Acked,
    /// Republished and confirmed, then stopped before the ack (the test hook).
    Crashed,
}

/// Republishes one dead letter, waits for the broker's confirm, and only then acks it.
async fn replay_one(
    publish: &Channel,
    topology: &Topology,
    held: &Held,
    delivery: &Delivery,
    routing_key: &str,
    crash: bool,
) -> Result<Step, PublishError> {
    let properties = headers::rebuild(&delivery.properties, replay_headers(delivery), None);
    let exchange = &topology.exchange;
    publish_confirmed(
        publish,
        exchange,
        routing_key,
        &delivery.data,
        properties,
        true,
    )
    .await?;
    if crash {
        return Ok(Step::Crashed);
    }
    held.channel
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .await?;
    Ok(Step::Acked)
}

/// The headers a replayed message carries: the original ones, without the worker's
/// `x-wallet-*` bookkeeping and the broker's dead-letter history.
fn replay_headers(delivery: &Delivery) -> FieldTable {
    let mut inner = delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default()
        .inner()
        .clone();
    inner.retain(|name: &ShortString, _| {
        let name = name.as_str();
        !(name.starts_with("x-wallet-")
            || name == "x-death"
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
