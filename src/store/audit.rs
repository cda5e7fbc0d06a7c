//! The audit log (docs/operations.md, the audit log): who did what to the worker's
//! state, when, and to how many — dead-letter replays and purges, circuit resets,
//! wallet changes from the command line, key rotations. A batched action opens its entry
//! before the first batch and its count grows in each batch's own transaction, so it is
//! exact even when the run is killed; a single action is recorded whole ([`record`]).
//! Every entry is also a log line.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

/// Where an action came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Cli,
    Console,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Console => "console",
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub via: String,
    pub action: String,
    pub target: Value,
    pub count: i64,
    pub finished_at: Option<DateTime<Utc>>,
}

crate::store::from_row!(Entry {
    id,
    at,
    actor,
    via,
    action,
    target,
    count,
    finished_at
});

/// Records a finished single action (`count` things it changed) and logs it.
pub async fn record(
    pool: &PgPool,
    actor: &str,
    via: Via,
    action: &str,
    target: &Value,
    count: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor, via, action, target, count, finished_at)
         VALUES ($1, $2, $3, $4, $5, now())",
    )
    .bind(actor)
    .bind(via.as_str())
    .bind(action)
    .bind(target)
    .bind(count)
    .execute(pool)
    .await?;
    tracing::info!(actor, via = via.as_str(), action, %target, count, "operator action");
    Ok(())
}

/// Opens an entry for `action` on `target` by `actor`; returns its id.
pub async fn open(
    pool: &PgPool,
    actor: &str,
    via: Via,
    action: &str,
    target: &Value,
) -> sqlx::Result<i64> {
    let id = sqlx::query_scalar(
        "INSERT INTO audit_log (actor, via, action, target) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(actor)
    .bind(via.as_str())
    .bind(action)
    .bind(target)
    .fetch_one(pool)
    .await?;
    tracing::info!(actor, via = via.as_str(), action, %target, audit_id = id, "operator action started");
    Ok(id)
}

/// Adds `n` to the entry's count, in the caller's transaction.
pub async fn counted(conn: &mut PgConnection, id: i64, n: i64) -> sqlx::Result<()> {
    if n > 0 {
        sqlx::query("UPDATE audit_log SET count = count + $2 WHERE id = $1")
            .bind(id)
            .bind(n)
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Marks the entry finished (an entry without a finish time was interrupted).
pub async fn finish(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE audit_log SET finished_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The latest `limit` entries, newest first.
pub async fn latest(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Entry>> {
    sqlx::query_as(
        "SELECT id, at, actor, via, action, target, count, finished_at FROM audit_log
         ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
