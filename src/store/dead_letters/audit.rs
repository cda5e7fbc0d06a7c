//! The audit log (docs/operations.md, the audit log): who replayed or purged what,
//! when, and how many. An entry is opened before the first batch and its count grows
//! in each batch's own transaction, so it is exact even when the run is killed.

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
    fn as_str(self) -> &'static str {
        match self {
            Self::Cli => "cli",
            Self::Console => "console",
        }
    }
}

/// One recorded action.
#[derive(Debug, Clone, sqlx::FromRow)]
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

/// Opens an entry for `action` on `target` by `actor`; returns its id.
pub async fn open(
    pool: &PgPool,
    actor: &str,
    via: Via,
    action: &str,
    target: &Value,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_log (actor, via, action, target) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(actor)
    .bind(via.as_str())
    .bind(action)
    .bind(target)
    .fetch_one(pool)
    .await
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
