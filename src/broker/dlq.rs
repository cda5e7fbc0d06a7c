//! Dead-letter queue operations (docs/interface.md, command line `dlq ...`): list, show, summary, replay
//! and purge, in memory bounded independently of the queue's depth.
//!
//! # How a pass reads the queue, and why this way
//!
//! AMQP lets a client see message k+1 of a queue only once message k left the head:
//! acked, or held unacked. Three ways to walk a classic queue without emptying it:
//!
//! * **Hold and release** (chosen): `basic.get` without ack, at most as many messages
//!   as the queue held when the pass began; ack only what the operation removes; close
//!   the channel. A classic queue puts every requeued message back at its *original
//!   position*, so the queue ends exactly as it was, minus what was acked. Dead letters
//!   arriving meanwhile are behind the held ones and stay behind them. A crash or
//!   `kill -9` at any point closes the connection and has the same effect: nothing is
//!   lost, reordered or duplicated. The client keeps only the message in hand (bodies
//!   are dropped once printed, counted or republished), so its memory is O(1); the
//!   broker's cost is the unacked bookkeeping of the messages held (they are in the
//!   broker either way), spread over channels of at most ~1000 each so that an ack
//!   stays cheap (see [`scan`]). A held message is invisible to other readers, hence the lock
//!   (one `dlq` operation at a time, see [`lock`]), and a pass must finish within the
//!   broker's `consumer_timeout` (30 min by default; 10⁶ dead letters take about two
//!   minutes, see `bench/README.md`).
//! * **Rotation** (consume, republish to the tail with confirm, ack): O(1) unacked, but
//!   only an *uninterrupted* full rotation restores the order. Killed halfway, it
//!   leaves the queue cyclically shifted (the passed part behind the rest) or, between
//!   confirm and ack, with a duplicate; dead letters arriving during the rotation end up
//!   among the older ones; each pass rewrites every message to disk; two concurrent
//!   rotations interleave. It breaks "reorders nothing" in exactly the cases an
//!   operator cares about.
//! * **Consume and nack with requeue**: the requeued message goes back to the head and
//!   is delivered again at once, so the consumer never gets past the prefetch window.
//!
//! `list` with a limit and no filter holds only the messages it prints (then reports the
//! rest from the queue's depth, which is exact as every message matches); everything
//! else is one full pass. A replayed message is acked only after the broker confirmed
//! its republish; a crash in between leaves it both republished and still
//! dead-lettered, which the worker's inbox makes harmless.

mod entry;
mod lock;
mod redact;
mod replay;
mod scan;
mod summary;

pub use entry::{DeadLetterEntry, DisplayBody};
pub use redact::SECRET_FIELDS;
pub use replay::{NotReplayed, ReplayOptions, ReplayReport, ReplayStep, Replayed, replay};
pub use summary::{OTHER, Summary, UNKNOWN, summary};

use super::publish::PublishError;
use super::topology::Topology;
use chrono::{DateTime, Utc};
use lapin::Connection;
use lapin::options::QueuePurgeOptions;
use lock::Lock;
use scan::Scan;
use std::collections::HashSet;

/// Why a dead-letter operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("no dead-letter queue {0}: has the worker run?")]
    Missing(String),
    #[error("another dlq command is working on {0}; try again when it is done")]
    Busy(String),
    #[error("broker error")]
    Broker(#[from] lapin::Error),
    #[error("replay stopped after {replayed} replayed; the others stay dead-lettered")]
    Interrupted {
        replayed: u64,
        #[source]
        source: PublishError,
    },
}

/// Which dead letters an operation takes: those matching every criterion given (no
/// criterion: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// By message id (several dead letters may share one); empty: any id.
    pub ids: Vec<String>,
    /// By original routing key, which is the message type.
    pub kind: Option<String>,
    /// By error kind (`x-wallet-error`, else the broker's `x-death` reason).
    pub error: Option<String>,
    /// Dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl Selection {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn ids(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            ids: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    pub fn of_type(kind: &str) -> Self {
        Self {
            kind: Some(kind.to_owned()),
            ..Self::default()
        }
    }

    pub fn of_error(error: &str) -> Self {
        Self {
            error: Some(error.to_owned()),
            ..Self::default()
        }
    }

    pub fn since(self, since: Option<DateTime<Utc>>) -> Self {
        Self { since, ..self }
    }

    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }

    pub fn matches(&self, entry: &DeadLetterEntry) -> bool {
        (self.ids.is_empty() || self.ids.contains(&entry.message_id))
            && self
                .kind
                .as_ref()
                .is_none_or(|k| entry.routing_key.as_ref() == Some(k))
            && self
                .error
                .as_ref()
                .is_none_or(|e| entry.error.as_ref() == Some(e))
            && self
                .since
                .is_none_or(|since| entry.dead_lettered_time().is_some_and(|at| at >= since))
    }
}

/// The requested ids, to report those no dead letter had (bounded by the request).
#[derive(Debug, Default)]
struct IdsSeen<'a> {
    requested: &'a [String],
    seen: HashSet<&'a str>,
}

impl<'a> IdsSeen<'a> {
    fn new(selection: &'a Selection) -> Self {
        Self {
            requested: &selection.ids,
            seen: HashSet::new(),
        }
    }

    fn saw(&mut self, entry: &DeadLetterEntry) {
        if let Some(id) = self.requested.iter().find(|id| **id == entry.message_id) {
            self.seen.insert(id.as_str());
        }
    }

    fn unknown(&self) -> Vec<String> {
        let mut unknown: Vec<String> = Vec::new();
        for id in self.requested {
            if !self.seen.contains(id.as_str()) && !unknown.contains(id) {
                unknown.push(id.clone());
            }
        }
        unknown
    }
}

/// What a `list` saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListReport {
    /// Ready dead letters when the listing began.
    pub depth: u64,
    /// Handed to the caller.
    pub shown: u64,
    /// Matching dead letters past the limit (exact: counted, or the rest of the depth
    /// when there is no filter).
    pub more: u64,
}

/// Hands the dead letters matching `filter`, in queue order, to `show`, at most `limit`
/// of them (all with `None`), and counts the others that match. The queue is left
/// exactly as it was. Without a filter, only the first `limit` are read at all.
pub async fn list(
    connection: &Connection,
    topology: &Topology,
    filter: &Selection,
    limit: Option<u64>,
    mut show: impl FnMut(DeadLetterEntry),
) -> Result<ListReport, DlqError> {
    with_pass(connection, topology, false, async |scan: &mut Scan<'_>| {
        let mut report = ListReport {
            depth: scan.depth(),
            ..ListReport::default()
        };
        let limit = limit.unwrap_or(u64::MAX);
        if filter.is_all() {
            scan.limit(limit);
        }
        while let Some((entry, _)) = scan.next().await? {
            if !filter.matches(&entry) {
                continue;
            }
            if report.shown < limit {
                report.shown += 1;
                show(entry);
            } else {
                report.more += 1;
            }
        }
        if filter.is_all() {
            report.more = report.depth.saturating_sub(report.shown);
        }
        Ok(report)
    })
    .await
}

/// What `show` found: every dead letter with the id, up to [`SHOW_AT_MOST`].
#[derive(Debug, Default)]
pub struct Shown {
    pub entries: Vec<DeadLetterEntry>,
    /// Dead letters with the id past the first [`SHOW_AT_MOST`].
    pub more: u64,
    /// Ready dead letters when the pass began.
    pub depth: u64,
}

/// Dead letters `show` keeps in memory at most.
pub const SHOW_AT_MOST: usize = 20;

/// The dead letters whose message id is `message_id`; the queue is left as it was.
pub async fn show(
    connection: &Connection,
    topology: &Topology,
    message_id: &str,
) -> Result<Shown, DlqError> {
    let filter = Selection::ids([message_id]);
    let mut entries = Vec::new();
    let report = list(
        connection,
        topology,
        &filter,
        Some(SHOW_AT_MOST as u64),
        |entry| entries.push(entry),
    )
    .await?;
    Ok(Shown {
        entries,
        more: report.more,
        depth: report.depth,
    })
}

/// What a purge removed.
#[derive(Debug, Clone, Default)]
pub struct PurgeReport {
    pub purged: u64,
    /// Requested ids that matched no dead letter.
    pub unknown_ids: Vec<String>,
}

/// Removes the selected dead letters; `Selection::all()` purges the queue. The others
/// stay where they were.
pub async fn purge(
    connection: &Connection,
    topology: &Topology,
    selection: &Selection,
) -> Result<PurgeReport, DlqError> {
    let queue = topology.dead_letter_queue();
    if selection.is_all() {
        let lock = Lock::acquire(connection, &queue).await?;
        let purged = purge_all(connection, &queue).await;
        lock.release().await;
        return Ok(PurgeReport {
            purged: purged?,
            unknown_ids: Vec::new(),
        });
    }
    with_pass(connection, topology, true, async |scan: &mut Scan<'_>| {
        let mut ids = IdsSeen::new(selection);
        let mut purged = 0;
        while let Some((entry, tag)) = scan.next().await? {
            ids.saw(&entry);
            if selection.matches(&entry) {
                scan.ack(tag)?;
                purged += 1;
            }
        }
        scan.settled().await?;
        Ok(PurgeReport {
            purged,
            unknown_ids: ids.unknown(),
        })
    })
    .await
}

async fn purge_all(connection: &Connection, queue: &str) -> Result<u64, DlqError> {
    let (channel, _) = scan::open(connection, queue).await?;
    let purged = channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await;
    let _ = channel.close(200, "purged".into()).await;
    Ok(purged?.into())
}

/// Runs `pass` over the dead-letter queue under the lock, then hands back whatever it
/// read and did not ack.
async fn with_pass<T>(
    connection: &Connection,
    topology: &Topology,
    removing: bool,
    pass: impl AsyncFnOnce(&mut Scan<'_>) -> Result<T, DlqError>,
) -> Result<T, DlqError> {
    let queue = topology.dead_letter_queue();
    let lock = Lock::acquire(connection, &queue).await?;
    let result = match Scan::begin(connection, &queue, removing).await {
        Ok(mut scan) => {
            let result = pass(&mut scan).await;
            scan.release().await;
            result
        }
        Err(err) => Err(err),
    };
    lock.release().await;
    result
}
