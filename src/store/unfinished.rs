//! The ledger of deliveries that started and did not finish (migration 0010): how the
//! worker tells a message that crashes or stalls it from one the broker redelivered
//! because a channel, a connection or a node went away (docs/operations.md, poison
//! messages).

use sqlx::PgPool;

/// Records that a redelivered message starts again; returns how many of its starts
/// have not finished, this one included.
pub async fn start(pool: &PgPool, message_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO unfinished_deliveries (message_id, starts) VALUES ($1, 1)
         ON CONFLICT (message_id) DO UPDATE
           SET starts = unfinished_deliveries.starts + 1, last_started = now()
         RETURNING starts::bigint",
    )
    .bind(message_id)
    .fetch_one(pool)
    .await
}

/// Forgets the message's unfinished starts: its handling ended.
pub async fn finish(pool: &PgPool, message_id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM unfinished_deliveries WHERE message_id = $1")
        .bind(message_id)
        .execute(pool)
        .await
        .map(drop)
}
