//! Dead-letter queue operations (contract §1 `dlq ...`): list, replay and purge.
//!
//! Every operation reads the queue the same way: on a channel of its own it takes the
//! messages with `basic.get` (no auto-ack), at most as many as the queue held at the
//! first get, so dead letters arriving meanwhile cannot keep it going. It acks only the
//! messages it is done with, then closes the channel: the broker requeues the rest, and
//! a classic queue puts a requeued message back at its old position, so nothing is lost
//! or reordered. A replayed message is acked only after the broker confirmed its
//! republish; a crash in between leaves it both republished and still dead-lettered,
//! which the worker's inbox makes harmless.

mod entry;
mod held;
mod redact;
mod replay;

pub use entry::{DeadLetterEntry, DisplayBody};
pub use redact::SECRET_FIELDS;
pub use replay::{NotReplayed, ReplayOptions, ReplayReport, Replayed, replay};

use super::publish::PublishError;
use super::topology::Topology;
use held::{Held, open};
use lapin::Connection;
use lapin::options::{BasicAckOptions, QueuePurgeOptions};

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead-letter queue {0}: has the worker run?")]
    Missing(String),
    #[error("broker error")]
    Broker(#[from] lapin::Error),
    #[error("replay stopped after {replayed} replayed; the others stay dead-lettered")]
    Interrupted {
        replayed: usize,
        #[source]
        source: PublishError,
    },
}

/// Which dead letters an operation takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    /// By message id (several dead letters may share one).
    Ids(Vec<String>),
    /// By original routing key, which is the message type.
    Type(String),
}

impl Selection {
    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains(&entry.message_id),
            Self::Type(kind) => entry.routing_key.as_deref() == Some(kind),
        }
    }

    /// The requested ids that no dead letter has.
    fn unknown_ids(&self, entries: &[DeadLetterEntry]) -> Vec<String> {
        let Self::Ids(ids) = self else {
            return Vec::new();
        };
        let mut unknown: Vec<String> = Vec::new();
        for id in ids {
            if !entries.iter().any(|e| &e.message_id == id) && !unknown.contains(id) {
                unknown.push(id.clone());
            }
        }
        unknown
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub purged: u64,
    /// Requested ids that matched no dead letter.
    pub unknown_ids: Vec<String>,
}

/// Every dead letter, in queue order; the queue is left exactly as it was.
pub async fn list(
    connection: &Connection,
    topology: &Topology,
) -> Result<Vec<DeadLetterEntry>, DlqError> {
    let held = Held::take(connection, &topology.dead_letter_queue()).await?;
    let entries = held.entries();
    held.release().await;
    Ok(entries)
}

/// Removes dead letters: `All` purges the queue; otherwise only the selected ones go.
pub async fn purge(
    connection: &Connection,
    topology: &Topology,
    selection: &Selection,
) -> Result<PurgeReport, DlqError> {
    let queue = topology.dead_letter_queue();
    if *selection == Selection::All {
        let channel = open(connection, &queue).await?;
        let purged = channel
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        let _ = channel.close(200, "purged".into()).await;
        return Ok(PurgeReport {
            purged: purged.into(),
            unknown_ids: Vec::new(),
        });
    }
    let held = Held::take(connection, &queue).await?;
    let entries = held.entries();
    let mut report = PurgeReport {
        purged: 0,
        unknown_ids: selection.unknown_ids(&entries),
    };
    let mut result = Ok(());
    for (entry, delivery) in entries.iter().zip(&held.deliveries) {
        if selection.matches(entry) {
            result = held
                .channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                .await;
            if result.is_err() {
                break;
            }
            report.purged += 1;
        }
    }
    held.release().await;
    result?;
    Ok(report)
}
