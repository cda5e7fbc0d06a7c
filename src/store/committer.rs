//! Group commit: changes that finish around the same time share one transaction, so
//! the commit's WAL flush is paid once per batch instead of once per message.
//!
//! Each change runs after its inbox claim in the same transaction, so a message id has
//! one effect however often it arrives. If a batch fails, its changes are retried one
//! transaction each, so one bad change cannot sink its neighbours.
//!
//! One loop commits: while a batch's transaction runs, the next batch gathers, so
//! batches grow with the load and the cost per message falls as it rises. (Two or four
//! loops side by side split the same traffic into smaller batches: on the benchmark
//! machine they cost more CPU per message, in the worker and in Postgres, and waited
//! for each other's customer locks.)

use super::effects::{self, Rules};
use super::outbox::{self, PendingEvent};
use crate::domain::events::Outcome;
use crate::domain::{Change, MessageId, MessageType, TraceContext};
use crate::error_chain::ErrorChain;
use crate::supervisor::Supervisor;
use crate::telemetry::propagation;
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The change and its events are durable; `outcome` labels what it did.
    Applied { outcome: Outcome, events: usize },
    /// The message id was processed before: nothing was written.
    Duplicate,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The commit loops are gone (the worker is stopping, or one of them died).
    #[error("the committer has stopped")]
    Stopped,
}

struct Job {
    message_id: MessageId,
    message_type: MessageType,
    change: Arc<Change>,
    /// The trace of the delivery that asked for the commit: the commit loops run in
    /// their own tasks, so it is taken along for the events (docs/interface.md, trace context).
    trace: Option<TraceContext>,
    reply: oneshot::Sender<Result<Committed, sqlx::Error>>,
}

/// Handle to the group-commit tasks.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

/// How the commit loop runs.
pub struct CommitterSettings {
    /// Changes per transaction at most.
    pub max_batch: usize,
    pub rules: Rules,
}

impl Committer {
    /// Starts the commit loop under `supervisor`. The events of each commit go to
    /// `committed_events` (the outbox relay), which publishes them without reading them
    /// back.
    pub fn spawn(
        pool: PgPool,
        settings: CommitterSettings,
        supervisor: &Supervisor,
        committed_events: mpsc::UnboundedSender<Vec<PendingEvent>>,
    ) -> Self {
        let (jobs, mut receiver) = mpsc::channel(settings.max_batch * 4);
        let CommitterSettings { max_batch, rules } = settings;
        supervisor.spawn("committer", async move {
            while let Some(mut batch) = next_batch(&mut receiver, max_batch).await {
                crate::faults::panic_point("committer.panic");
                batch.sort_by(|a, b| {
                    (a.change.lock_key(), &a.message_id).cmp(&(b.change.lock_key(), &b.message_id))
                });
                commit_batch(&pool, &rules, batch, &committed_events).await;
            }
        });
        Self { jobs }
    }

    /// Commits `change` for message `message_id` (or finds it was already processed).
    /// The caller keeps its reference to try again after a transient failure. The
    /// events carry the caller's current trace context.
    pub async fn commit(
        &self,
        message_id: &MessageId,
        message_type: MessageType,
        change: Arc<Change>,
    ) -> Result<Committed, CommitError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            message_id: message_id.clone(),
            message_type,
            change,
            trace: propagation::current(),
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(answer.await.map_err(|_| CommitError::Stopped)??)
    }
}

/// Commits one change right away, outside the group-commit loops (the CLI's wallet
/// commands): the same inbox claim, effects and outbox rows as a message's commit.
pub async fn commit_now(
    pool: &PgPool,
    rules: &Rules,
    message_id: &MessageId,
    message_type: MessageType,
    change: &Change,
) -> sqlx::Result<(Committed, Vec<PendingEvent>)> {
    let trace = propagation::current();
    let work = Work {
        message_id,
        message_type,
        change,
        trace: trace.as_ref(),
    };
    let (outcomes, events) = run_transaction(pool, rules, &[work]).await?;
    Ok((outcomes[0], events))
}

/// One message's share of a transaction.
struct Work<'a> {
    message_id: &'a MessageId,
    message_type: MessageType,
    change: &'a Change,
    trace: Option<&'a TraceContext>,
}

impl<'a> From<&'a Job> for Work<'a> {
    fn from(job: &'a Job) -> Self {
        Self {
            message_id: &job.message_id,
            message_type: job.message_type,
            change: &job.change,
            trace: job.trace.as_ref(),
        }
    }
}

/// Waits for one job, then takes whatever else is already waiting (never waits for more:
/// batching must not add latency).
async fn next_batch(receiver: &mut mpsc::Receiver<Job>, max_batch: usize) -> Option<Vec<Job>> {
    let mut batch = Vec::with_capacity(max_batch);
    (receiver.recv_many(&mut batch, max_batch).await > 0).then_some(batch)
}

async fn commit_batch(
    pool: &PgPool,
    rules: &Rules,
    batch: Vec<Job>,
    committed: &mpsc::UnboundedSender<Vec<PendingEvent>>,
) {
    metrics::histogram!(crate::metrics::COMMIT_BATCH).record(batch.len() as f64);
    let work: Vec<Work<'_>> = batch.iter().map(Work::from).collect();
    let committed_batch = run_transaction(pool, rules, &work).await;
    drop(work);
    match committed_batch {
        Ok((outcomes, events)) => {
            hand_over(committed, events);
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(err) if batch.len() == 1 => {
            let job = batch.into_iter().next().expect("batch of one");
            let _ = job.reply.send(Err(err));
        }
        Err(err) => {
            tracing::debug!(error = %ErrorChain(&err), size = batch.len(), "batch commit failed, retrying one by one");
            for job in batch {
                let result = run_transaction(pool, rules, &[Work::from(&job)]).await;
                let result = result.map(|(outcomes, events)| {
                    hand_over(committed, events);
                    outcomes[0]
                });
                let _ = job.reply.send(result);
            }
        }
    }
}

/// Gives committed events to the relay. If it is gone, they stay in the outbox and
/// its sweep publishes them.
fn hand_over(committed: &mpsc::UnboundedSender<Vec<PendingEvent>>, events: Vec<PendingEvent>) {
    if !events.is_empty() {
        let _ = committed.send(events);
    }
}

/// Runs `jobs` in one transaction ([`super::in_transaction`]).
async fn run_transaction(
    pool: &PgPool,
    rules: &Rules,
    jobs: &[Work<'_>],
) -> sqlx::Result<(Vec<Committed>, Vec<PendingEvent>)> {
    super::in_transaction(pool, async |conn| apply_all(conn, rules, jobs).await).await
}

/// Applies the batch's changes ([`effects::apply_batch`]) and writes all their events
/// with one more statement.
async fn apply_all(
    tx: &mut PgConnection,
    rules: &Rules,
    jobs: &[Work<'_>],
) -> sqlx::Result<(Vec<Committed>, Vec<PendingEvent>)> {
    let messages: Vec<effects::Message<'_>> = jobs
        .iter()
        .map(|job| effects::Message {
            id: job.message_id,
            kind: job.message_type,
            change: job.change,
        })
        .collect();
    let caused = effects::apply_batch(tx, rules, &messages).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for (job, caused) in jobs.iter().zip(caused) {
        let Some(mut caused) = caused else {
            outcomes.push(Committed::Duplicate);
            continue;
        };
        outcomes.push(Committed::Applied {
            outcome: Outcome::of(&caused),
            events: caused.len(),
        });
        for event in &mut caused {
            event.trace = job.trace.cloned();
        }
        events.extend(caused);
    }
    let pending = outbox::insert_all(tx, &rules.keys, events).await?;
    Ok((outcomes, pending))
}
