//! The inbox: which inbound message ids have had their effect.

use sqlx::{PgConnection, PgPool};

/// Records `message_id` as processed; false when it already was (the caller must then
/// apply nothing). Racing transactions serialize on the primary key.
pub async fn claim(
    conn: &mut PgConnection,
    message_id: &str,
    message_type: &str,
    outcome: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO processed_messages (message_id, message_type, outcome)
         VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(message_type)
    .bind(outcome)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Whether `message_id` was already processed: lets a redelivered save skip the gateway.
pub async fn is_processed(pool: &PgPool, message_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_messages WHERE message_id = $1)")
        .bind(message_id)
        .fetch_one(pool)
        .await
}
