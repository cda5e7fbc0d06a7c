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

/// Writes a batch of events with one statement.
pub async fn insert_all(conn: &mut PgConnection, events: &[OutboundEvent]) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let keys: Vec<&str> = events.iter().map(|e| e.routing_key).collect();
    let correlations: Vec<Option<&str>> =
        events.iter().map(|e| e.correlation_id.as_deref()).collect();
    let causes: Vec<&str> = events.iter().map(|e| e.causation_id.as_str()).collect();
    let bodies: Vec<&[u8]> = events.iter().map(|e| e.body.as_slice()).collect();
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, correlation_id, causation_id, body)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])",
    )
    .bind(&ids)
    .bind(&keys)
    .bind(&correlations)
    .bind(&causes)
    .bind(&bodies)
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
