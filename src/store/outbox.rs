//! The outbox: events written in the same transaction as their state, published by the
//! relay and deleted once the broker confirmed them. Each row keeps the trace context
//! of the work that caused it, so whichever process publishes it sends that on. Bodies
//! are sealed (`wallet.attached` carries tokens): the relay publishes what the commit
//! handed it in memory, and only a sweep opens stored bodies.
//!
//! A replayed dead letter travels the same way (docs/operations.md, replay): its row
//! also holds the message's own AMQP properties and headers, which it is published
//! with instead of an event's. Its headers are sealed like its body: another producer's
//! header may hold anything.

use super::keys::OUTBOX;
use crate::crypto::Keyring;
use crate::domain::TraceContext;
use crate::domain::events::OutboundEvent;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::HashMap;

/// An event waiting for publication (its body in the clear).
#[derive(Debug)]
pub struct PendingEvent {
    pub seq: i64,
    pub event_id: String,
    pub routing_key: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub body: Vec<u8>,
    /// `traceparent` of the work that caused the event (docs/interface.md, trace context).
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// A replayed message's properties and headers
    /// ([`crate::broker::amqp_json`] forms); `None` for an event.
    pub properties: Option<serde_json::Value>,
    pub headers: Option<serde_json::Value>,
}

impl PendingEvent {
    /// `event`, just written to the outbox as row `seq`, as the relay publishes it.
    fn written(event: OutboundEvent, seq: i64) -> Self {
        let (traceparent, tracestate) = match event.trace {
            Some(trace) => (Some(trace.traceparent), trace.tracestate),
            None => (None, None),
        };
        Self {
            seq,
            routing_key: event.kind.as_str().to_owned(),
            event_id: event.id,
            correlation_id: event.correlation_id,
            causation_id: event.causation_id,
            body: event.body,
            traceparent,
            tracestate,
            properties: None,
            headers: None,
        }
    }

    /// The trace context to publish the event with, if it has one.
    pub fn trace(&self) -> Option<TraceContext> {
        Some(TraceContext {
            traceparent: self.traceparent.clone()?,
            tracestate: self.tracestate.clone(),
        })
    }
}

/// Writes a batch of events with one statement, bodies sealed; returns them as the
/// relay needs them.
pub async fn insert_all(
    conn: &mut PgConnection,
    keys: &Keyring,
    events: Vec<OutboundEvent>,
) -> sqlx::Result<Vec<PendingEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let routing_keys: Vec<&str> = events.iter().map(|e| e.routing_key()).collect();
    let correlations: Vec<Option<&str>> =
        events.iter().map(|e| e.correlation_id.as_deref()).collect();
    let causes: Vec<Option<&str>> = events.iter().map(|e| e.causation_id.as_deref()).collect();
    let sealed: Vec<Vec<u8>> = events
        .iter()
        .map(|e| keys.seal(&e.body, OUTBOX.row("body", &e.id)).bytes)
        .collect();
    let parents: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.trace.as_ref().map(|t| t.traceparent.as_str()))
        .collect();
    let states: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.trace.as_ref().and_then(|t| t.tracestate.as_deref()))
        .collect();
    let seqs: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO outbox
             (event_id, routing_key, correlation_id, causation_id, body, traceparent, tracestate,
              key_id)
         SELECT *, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                                  $6::text[], $7::text[])
         RETURNING event_id, seq",
    )
    .bind(&ids)
    .bind(&routing_keys)
    .bind(&correlations)
    .bind(&causes)
    .bind(&sealed)
    .bind(&parents)
    .bind(&states)
    .bind(keys.active_id())
    .fetch_all(conn)
    .await?;
    let seqs: HashMap<String, i64> = seqs.into_iter().collect();
    Ok(events
        .into_iter()
        .map(|event| {
            let seq = seqs.get(&event.id).copied().unwrap_or_default();
            PendingEvent::written(event, seq)
        })
        .collect())
}

/// A dead letter on its way back to its routing key.
#[derive(Debug)]
pub struct Replay<'a> {
    pub routing_key: &'a str,
    pub message_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub body: &'a [u8],
    pub properties: &'a serde_json::Value,
    pub headers: serde_json::Value,
}

/// Writes replayed messages with one statement, bodies and headers sealed; returns
/// them as the relay needs them. Their `event_id` is a fresh outbox key: the message
/// keeps its own id in its properties.
pub async fn insert_replays(
    conn: &mut PgConnection,
    keys: &Keyring,
    replays: Vec<Replay<'_>>,
) -> sqlx::Result<Vec<PendingEvent>> {
    if replays.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = replays
        .iter()
        .map(|_| crate::domain::ids::event_id())
        .collect();
    let routing_keys: Vec<&str> = replays.iter().map(|r| r.routing_key).collect();
    let correlations: Vec<Option<&str>> = replays.iter().map(|r| r.correlation_id).collect();
    let causes: Vec<Option<&str>> = replays.iter().map(|r| r.message_id).collect();
    let (mut bodies, mut headers) = (Vec::new(), Vec::new());
    for (replay, id) in replays.iter().zip(&ids) {
        bodies.push(keys.seal(replay.body, OUTBOX.row("body", id)).bytes);
        let text = serde_json::to_vec(&replay.headers).unwrap_or_default();
        headers.push(keys.seal(&text, OUTBOX.row("headers", id)).bytes);
    }
    let properties: Vec<&serde_json::Value> = replays.iter().map(|r| r.properties).collect();
    let seqs: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO outbox
             (event_id, routing_key, correlation_id, causation_id, body, properties, headers,
              key_id)
         SELECT *, $8 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[],
                                  $6::jsonb[], $7::bytea[])
         RETURNING event_id, seq",
    )
    .bind(&ids)
    .bind(&routing_keys)
    .bind(&correlations)
    .bind(&causes)
    .bind(&bodies)
    .bind(&properties)
    .bind(&headers)
    .bind(keys.active_id())
    .fetch_all(conn)
    .await?;
    let seqs: HashMap<String, i64> = seqs.into_iter().collect();
    Ok(replays
        .into_iter()
        .zip(ids)
        .map(|(replay, event_id)| PendingEvent {
            seq: seqs.get(&event_id).copied().unwrap_or_default(),
            event_id,
            routing_key: replay.routing_key.to_owned(),
            correlation_id: replay.correlation_id.map(str::to_owned),
            causation_id: replay.message_id.map(str::to_owned),
            body: replay.body.to_vec(),
            traceparent: None,
            tracestate: None,
            properties: Some(replay.properties.clone()),
            headers: Some(replay.headers),
        })
        .collect())
}

/// Locks up to `limit` events committed more than `min_age` ago and still unpublished,
/// oldest first: rows left by a crash or a lost connection (fresh rows are being
/// published by the relay of the process that committed them). Rows locked by another
/// worker's sweep are skipped, so two sweeps never publish the same row concurrently.
///
/// Their bodies are opened; one that does not open (its key missing, or the row
/// altered) fails the sweep with a decode error naming the event and the key, and the
/// row stays for a later sweep.
pub async fn lock_stale(
    conn: &mut PgConnection,
    keys: &Keyring,
    min_age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<PendingEvent>> {
    let rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT seq, event_id, routing_key, correlation_id, causation_id, key_id, body,
                traceparent, tracestate, properties, headers
         FROM outbox WHERE created_at < now() - make_interval(secs => $1)
         ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(min_age.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(|row| row.open(keys)).collect()
}

/// An outbox row as stored: its body sealed under `key_id`.
struct StoredEvent {
    seq: i64,
    event_id: String,
    routing_key: String,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    key_id: String,
    body: Vec<u8>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    properties: Option<serde_json::Value>,
    /// A replayed message's headers, sealed like the body; `None` for an event.
    headers: Option<Vec<u8>>,
}

crate::store::from_row!(StoredEvent {
    seq,
    event_id,
    routing_key,
    correlation_id,
    causation_id,
    key_id,
    body,
    traceparent,
    tracestate,
    properties,
    headers
});

impl StoredEvent {
    fn open(self, keys: &Keyring) -> sqlx::Result<PendingEvent> {
        let open = |column, sealed: &[u8]| {
            keys.open(&self.key_id, sealed, OUTBOX.row(column, &self.event_id))
                .map_err(|err| sqlx::Error::Decode(err.into()))
        };
        let body = open("body", &self.body)?;
        let headers = match &self.headers {
            Some(sealed) => Some(
                serde_json::from_slice(&open("headers", sealed)?)
                    .map_err(|err| sqlx::Error::Decode(err.into()))?,
            ),
            None => None,
        };
        Ok(PendingEvent {
            seq: self.seq,
            event_id: self.event_id,
            routing_key: self.routing_key,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            body: body.to_vec(),
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            properties: self.properties,
            headers,
        })
    }
}

/// Locks the rows `seqs` that are still there and nobody else holds; returns their
/// seqs. A process publishes what it committed itself (from memory), unless a sweep
/// already took it.
pub async fn lock(tx: &mut Transaction<'_, Postgres>, seqs: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT seq FROM outbox WHERE seq = ANY($1) ORDER BY seq FOR UPDATE SKIP LOCKED",
    )
    .bind(seqs)
    .fetch_all(&mut **tx)
    .await
}

/// Forgets published events.
pub async fn delete(conn: &mut PgConnection, seqs: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
        .bind(seqs)
        .execute(conn)
        .await?;
    Ok(())
}

/// Events committed but not yet confirmed by the broker.
pub async fn backlog(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
}
