//! The outbox: events written in the same transaction as their state, published by the
//! relay and deleted once the broker confirmed them.

use crate::domain::events::OutboundEvent;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// An event waiting for publication.
#[derive(Debug, sqlx::FromRow)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub routing_key: String,
    pub correlation_id: Option<String>,
    pub causation_id: String,
    pub body: Vec<u8>,
}

pub async fn insert(conn: &mut PgConnection, event: &OutboundEvent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, correlation_id, causation_id, body)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&event.id)
    .bind(event.routing_key)
    .bind(&event.correlation_id)
    .bind(&event.causation_id)
    .bind(&event.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks up to `limit` unpublished events, oldest first. Rows locked by another
/// worker's relay are skipped, so two relays never publish the same row concurrently.
pub async fn lock_batch(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> sqlx::Result<Vec<PendingEvent>> {
    sqlx::query_as(
        "SELECT seq, event_id, routing_key, correlation_id, causation_id, body
         FROM outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

pub async fn delete(tx: &mut Transaction<'_, Postgres>, seqs: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Events committed but not yet confirmed by the broker.
pub async fn backlog(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}
