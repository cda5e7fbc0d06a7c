//! Group commit: effects that finish around the same time share one transaction, so
//! the commit's WAL flush is paid once per batch instead of once per message.
//!
//! Each effect runs after its inbox claim in the same transaction, so a message id has
//! one effect however often it arrives. If a batch fails, its effects are retried one
//! transaction each, so one bad effect cannot sink its neighbours.

use super::inbox;
use super::outbox::{self, PendingEvent};
use crate::domain::events::OutboundEvent;
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};

/// A state change decided by a handler, applied inside the committer's transaction.
pub trait Effect: Send + Sync + 'static {
    /// The label recorded in the inbox (`saved`, `attach_rejected`, ...).
    fn outcome(&self) -> &'static str;
    /// The row this effect contends for most (its customer id). Batches apply effects
    /// in this order, so two transactions — of this worker or another — lock shared
    /// rows in the same order and cannot deadlock on them.
    fn lock_key(&self) -> &str {
        ""
    }
    /// Writes the state and returns the events it causes (written to the outbox).
    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, sqlx::Result<Vec<OutboundEvent>>>;
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The effect and its events are durable.
    Applied { events: usize },
    /// The message id was processed before: nothing was written.
    Duplicate,
}

struct Job {
    message_id: String,
    message_type: &'static str,
    effect: Arc<dyn Effect>,
    reply: oneshot::Sender<sqlx::Result<Committed>>,
}

/// Handle to the group-commit tasks.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts `parallelism` commit loops, each taking up to `max_batch` waiting effects
    /// per transaction. The events of each commit go to `committed_events` (the outbox
    /// relay), which publishes them without reading them back.
    pub fn spawn(
        pool: PgPool,
        parallelism: usize,
        max_batch: usize,
        committed_events: mpsc::UnboundedSender<Vec<PendingEvent>>,
    ) -> Self {
        let (jobs, receiver) = mpsc::channel(max_batch * parallelism * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..parallelism.max(1) {
            let receiver = receiver.clone();
            let pool = pool.clone();
            let committed = committed_events.clone();
            tokio::spawn(async move {
                while let Some(mut batch) = next_batch(&receiver, max_batch).await {
                    batch.sort_by(|a, b| {
                        (a.effect.lock_key(), &a.message_id)
                            .cmp(&(b.effect.lock_key(), &b.message_id))
                    });
                    commit_batch(&pool, batch, &committed).await;
                }
            });
        }
        Self { jobs }
    }

    /// Commits `effect` for message `message_id` (or finds it was already processed).
    pub async fn commit(
        &self,
        message_id: &str,
        message_type: &'static str,
        effect: Arc<dyn Effect>,
    ) -> sqlx::Result<Committed> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            message_id: message_id.to_owned(),
            message_type,
            effect,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

/// Waits for one job, then takes whatever else is already waiting (never waits for more:
/// batching must not add latency).
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Job>>, max_batch: usize) -> Option<Vec<Job>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max_batch {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn commit_batch(
    pool: &PgPool,
    batch: Vec<Job>,
    committed: &mpsc::UnboundedSender<Vec<PendingEvent>>,
) {
    match run_transaction(pool, &batch).await {
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
            tracing::debug!(error = %err, size = batch.len(), "batch commit failed, retrying one by one");
            for job in batch {
                let result = run_transaction(pool, std::slice::from_ref(&job)).await;
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

/// Runs `jobs` in one transaction, rolled back explicitly on failure (a dropped
/// transaction keeps its locks until its connection is reused).
async fn run_transaction(
    pool: &PgPool,
    jobs: &[Job],
) -> sqlx::Result<(Vec<Committed>, Vec<PendingEvent>)> {
    let mut tx = pool.begin().await?;
    match apply_all(&mut tx, jobs).await {
        Ok(done) => {
            tx.commit().await?;
            Ok(done)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Claims every message id of the batch with one statement, applies the effects of the
/// claimed ones, and writes all their events with one more: two round trips per batch
/// on top of the effects' own writes.
async fn apply_all(
    tx: &mut PgConnection,
    jobs: &[Job],
) -> sqlx::Result<(Vec<Committed>, Vec<PendingEvent>)> {
    let claims: Vec<_> = jobs
        .iter()
        .map(|job| inbox::Claim {
            message_id: &job.message_id,
            message_type: job.message_type,
            outcome: job.effect.outcome(),
        })
        .collect();
    let mut claimed = inbox::claim_all(tx, &claims).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    for job in jobs {
        // `remove`: a second job with the same id in this batch is a duplicate too.
        if !claimed.remove(job.message_id.as_str()) {
            outcomes.push(Committed::Duplicate);
            continue;
        }
        let caused = job.effect.apply(tx).await?;
        outcomes.push(Committed::Applied {
            events: caused.len(),
        });
        events.extend(caused);
    }
    let pending = outbox::insert_all(tx, events).await?;
    Ok((outcomes, pending))
}
