//! The inbox: which inbound message ids have had their effect. A commit claims its
//! messages' ids in [`super::batch::open`].

use sqlx::PgPool;

/// Whether `message_id` was already processed: lets a redelivered save skip the gateway.
pub async fn is_processed(pool: &PgPool, message_id: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM processed_messages WHERE message_id = $1)")
        .bind(message_id)
        .fetch_one(pool)
        .await
}
