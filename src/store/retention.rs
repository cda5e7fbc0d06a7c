//! Retention (docs/operations.md, storage retention): a background pruner that forgets
//! processed message ids older than the dedupe window, orders untouched for the order
//! window and dead letters kept longer than theirs, while the worker runs.
//!
//! Each batch is one short transaction: lock up to [`BATCH`] of the oldest expired
//! rows with `FOR UPDATE SKIP LOCKED` and delete them by `ctid`. Several workers prune
//! side by side without waiting for each other or deleting a row twice, and a batch
//! never holds locks long enough to stall the commit path. Each batch starts at the
//! newest time the previous one deleted (indexes of migration 0004), so a pass does not
//! rescan the rows it already removed, and a pause between batches leaves the
//! database to the messages.

use super::dead_letters;
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::supervisor::Supervisor;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Rows per transaction.
pub const BATCH: i64 = 1000;

/// What the pruner keeps and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Processed message ids are remembered this long: the dedupe window.
    pub inbox: chrono::Duration,
    /// Orders are kept this long after their last change.
    pub orders: chrono::Duration,
    /// Dead letters are kept this long in the store after their ingestion.
    pub dead_letters: chrono::Duration,
    /// Between two passes.
    pub interval: Duration,
    /// Between two batches of a pass.
    pub pause: Duration,
}

impl RetentionSettings {
    pub fn from_days(inbox_days: u32, order_days: u32, interval: Duration) -> Self {
        Self {
            inbox: chrono::Duration::days(inbox_days.into()),
            orders: chrono::Duration::days(order_days.into()),
            dead_letters: chrono::Duration::days(DEFAULT_DEAD_LETTER_DAYS.into()),
            interval,
            pause: Duration::from_millis(100),
        }
    }

    /// Keeps dead letters `days` days instead of the default.
    pub fn keeping_dead_letters(self, days: u32) -> Self {
        Self {
            dead_letters: chrono::Duration::days(days.into()),
            ..self
        }
    }
}

/// `WALLET_DEAD_LETTER_RETENTION_DAYS` unless set.
pub const DEFAULT_DEAD_LETTER_DAYS: u32 = 30;

/// A table the pruner trims, and its age column.
#[derive(Debug, Clone, Copy)]
enum Table {
    Inbox,
    Orders,
    /// The poison ledger (migration 0010): a row whose message never came back within
    /// the dedupe window means nothing any more.
    Unfinished,
    DeadLetters,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Self::Inbox => "processed_messages",
            Self::Orders => "orders",
            Self::Unfinished => "unfinished_deliveries",
            Self::DeadLetters => "dead_letters",
        }
    }

    /// Deletes one batch of rows aged before `$1` and not before `$2`, oldest first;
    /// returns how many and the newest time deleted. Dead letters need more than one
    /// statement (see [`Self::batch`]).
    fn batch_sql(self) -> Option<&'static str> {
        Some(match self {
            Self::DeadLetters => return None,
            Self::Inbox => {
                "WITH gone AS (
                   DELETE FROM processed_messages
                   WHERE ctid = ANY (ARRAY (
                       SELECT ctid FROM processed_messages
                       WHERE processed_at < $1 AND processed_at >= $2
                       ORDER BY processed_at LIMIT $3
                       FOR UPDATE SKIP LOCKED))
                     AND processed_at < $1
                   RETURNING processed_at)
                 SELECT count(*), max(processed_at) FROM gone"
            }
            Self::Orders => {
                "WITH gone AS (
                   DELETE FROM orders
                   WHERE ctid = ANY (ARRAY (
                       SELECT ctid FROM orders
                       WHERE updated_at < $1 AND updated_at >= $2
                       ORDER BY updated_at LIMIT $3
                       FOR UPDATE SKIP LOCKED))
                     AND updated_at < $1
                   RETURNING updated_at)
                 SELECT count(*), max(updated_at) FROM gone"
            }
            Self::Unfinished => {
                "WITH gone AS (
                   DELETE FROM unfinished_deliveries
                   WHERE ctid = ANY (ARRAY (
                       SELECT ctid FROM unfinished_deliveries
                       WHERE last_started < $1 AND last_started >= $2
                       ORDER BY last_started LIMIT $3
                       FOR UPDATE SKIP LOCKED))
                     AND last_started < $1
                   RETURNING last_started)
                 SELECT count(*), max(last_started) FROM gone"
            }
        })
    }

    fn window(self, settings: &RetentionSettings) -> chrono::Duration {
        match self {
            Self::Inbox | Self::Unfinished => settings.inbox,
            Self::Orders => settings.orders,
            Self::DeadLetters => settings.dead_letters,
        }
    }

    /// Deletes one batch (see [`Self::batch_sql`]); dead letters also leave their
    /// failure groups, in the same transaction.
    async fn batch(
        self,
        pool: &PgPool,
        cutoff: DateTime<Utc>,
        from: DateTime<Utc>,
    ) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
        match self.batch_sql() {
            Some(sql) => {
                sqlx::query_as(sql)
                    .bind(cutoff)
                    .bind(from)
                    .bind(BATCH)
                    .fetch_one(pool)
                    .await
            }
            None => dead_letters::prune::batch(pool, cutoff, from, BATCH).await,
        }
    }
}

/// Rows one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub inbox: u64,
    pub orders: u64,
    pub unfinished: u64,
    pub dead_letters: u64,
}

/// Prunes every `settings.interval` until `shutdown`; a failed pass (database away) is
/// logged and tried again at the next interval.
pub fn spawn(
    pool: PgPool,
    settings: RetentionSettings,
    supervisor: &Supervisor,
    shutdown: CancellationToken,
) -> JoinHandle<Option<()>> {
    supervisor.spawn("pruner", async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(settings.interval) => {}
                _ = shutdown.cancelled() => return,
            }
            match prune(&pool, &settings, &shutdown).await {
                Ok(pruned) if pruned != Pruned::default() => {
                    tracing::info!(
                        inbox = pruned.inbox,
                        orders = pruned.orders,
                        unfinished_deliveries = pruned.unfinished,
                        dead_letters = pruned.dead_letters,
                        "retention pass done"
                    );
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(
                        error = %ErrorChain(&err),
                        "retention pass failed; trying again later"
                    )
                }
            }
        }
    })
}

/// One pass over every table, batch after batch until nothing expired is left (or
/// `stop`).
pub async fn prune(
    pool: &PgPool,
    settings: &RetentionSettings,
    stop: &CancellationToken,
) -> sqlx::Result<Pruned> {
    let now = Utc::now();
    Ok(Pruned {
        inbox: prune_table(pool, Table::Inbox, now, settings, stop).await?,
        orders: prune_table(pool, Table::Orders, now, settings, stop).await?,
        unfinished: prune_table(pool, Table::Unfinished, now, settings, stop).await?,
        dead_letters: prune_table(pool, Table::DeadLetters, now, settings, stop).await?,
    })
}

async fn prune_table(
    pool: &PgPool,
    table: Table,
    now: DateTime<Utc>,
    settings: &RetentionSettings,
    stop: &CancellationToken,
) -> sqlx::Result<u64> {
    let cutoff = now - table.window(settings);
    // 0001-01-01: before any row, and within Postgres' range (chrono's MIN is not).
    let mut from = DateTime::<Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or(cutoff);
    let mut total = 0;
    while !stop.is_cancelled() {
        let (deleted, newest) = table.batch(pool, cutoff, from).await?;
        let deleted = u64::try_from(deleted).unwrap_or_default();
        total += deleted;
        metrics::counter!(m::RETENTION_PRUNED, "table" => table.name()).increment(deleted);
        match newest {
            Some(newest) if deleted == BATCH as u64 => from = newest,
            // Fewer than a batch: done (rows another worker had locked are its own).
            _ => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.pause) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(total)
}
