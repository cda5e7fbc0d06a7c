//! The inbox: which inbound message ids have had their effect.

use sqlx::{PgConnection, PgPool};
use std::collections::HashSet;

/// One message to record as processed.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub message_id: &'a str,
    pub message_type: &'a str,
}

/// Records every message of a batch in one statement; returns the ids that were new.
/// Ids already processed (or repeated within the batch) are claimed at most once.
pub async fn claim_all(
    conn: &mut PgConnection,
    claims: &[Claim<'_>],
) -> sqlx::Result<HashSet<String>> {
    let ids: Vec<&str> = claims.iter().map(|c| c.message_id).collect();
    let types: Vec<&str> = claims.iter().map(|c| c.message_type).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO processed_messages (message_id, message_type)
         SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// Whether `message_id` was already processed: lets a redelivered save skip the gateway.
pub async fn is_processed(pool: &PgPool, message_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_messages WHERE message_id = $1)")
        .bind(message_id)
        .fetch_one(pool)
        .await
}
