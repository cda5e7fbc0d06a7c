//! Retention of the dead-letter store (docs/operations.md, storage retention): rows
//! kept longer than `WALLET_DEAD_LETTER_RETENTION_DAYS` go, oldest first, in batches
//! run by [`crate::store::retention`]. Age counts from ingestion: the time a dead letter
//! claims comes from headers any producer may set, and a backlog ingested on upgrade
//! must not vanish the moment it arrives.

use super::groups;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Deletes up to `limit` rows ingested before `cutoff` and not before `from`, and takes
/// the pending ones off their groups, in one transaction. Returns how many, and the
/// newest ingestion time deleted.
pub async fn batch(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    from: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    crate::store::in_transaction(pool, async |conn| delete(conn, cutoff, from, limit).await).await
}

async fn delete(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
    from: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
    let gone: Vec<(String, bool, DateTime<Utc>)> = sqlx::query_as(
        "DELETE FROM dead_letters
         WHERE ctid = ANY (ARRAY (
             SELECT ctid FROM dead_letters
             WHERE ingested_at < $1 AND ingested_at >= $2
             ORDER BY ingested_at LIMIT $3
             FOR UPDATE SKIP LOCKED))
           AND ingested_at < $1
         RETURNING group_key, replayed_at IS NULL, ingested_at",
    )
    .bind(cutoff)
    .bind(from)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let pending = gone
        .iter()
        .filter(|(_, pending, _)| *pending)
        .map(|(group, _, _)| group.as_str());
    groups::remove(conn, &groups::tally(pending)).await?;
    let newest = gone.iter().map(|(_, _, at)| *at).max();
    Ok((gone.len() as i64, newest))
}
