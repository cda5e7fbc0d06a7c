//! Messages waiting for a delayed retry (migration 0010; docs/operations.md, retries):
//! written by a retry verdict before its delivery is acked, republished by the
//! scheduler ([`crate::broker::scheduler`]) once due, and deleted only after the broker
//! confirmed the republish. The properties are stored in their AMQP wire encoding, so a
//! retried message goes back exactly as it came, headers included. Bodies carry tokens:
//! they are sealed like outbox bodies, bound to their row's id.

use super::keys::DELAYED;
use crate::crypto::Keyring;
use lapin::BasicProperties;
use lapin::protocol::basic::{gen_properties, parse_properties};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;

/// A message to retry later.
#[derive(Debug, Clone)]
pub struct Delayed<'a> {
    /// The message's id, for the redelivery check.
    pub key: &'a str,
    pub body: &'a [u8],
    /// As the republish carries them (attempt headers included).
    pub properties: &'a BasicProperties,
    pub routing_key: &'a str,
    pub attempts: u32,
    pub panics: u32,
    pub delay: Duration,
}

/// A due message, as it is republished (its body opened).
#[derive(Debug, Clone)]
pub struct Due {
    /// The row, deleted once the broker took the republish.
    pub id: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// The properties in their AMQP wire encoding.
pub fn encode(properties: &BasicProperties) -> Vec<u8> {
    let written = gen_properties(properties)(Vec::new().into());
    // Writing into a growable buffer cannot run out of room.
    written.map(|context| context.write).unwrap_or_default()
}

/// The properties back from their AMQP wire encoding.
pub fn decode(bytes: &[u8]) -> Result<BasicProperties, String> {
    parse_properties(bytes)
        .map(|(_, properties)| properties)
        .map_err(|err| err.to_string())
}

/// Stores the message as a row of its own (never merged with an earlier row of the same
/// message, which the scheduler may be republishing and about to delete), its body
/// sealed under the active key. Each call makes a new row id: a call retried after an
/// outage writes at most one row that counts (the first that committed).
pub async fn store(pool: &PgPool, keys: &Keyring, delayed: &Delayed<'_>) -> sqlx::Result<()> {
    let delay_ms = i64::try_from(delayed.delay.as_millis()).unwrap_or(i64::MAX);
    let id = uuid::Uuid::new_v4().to_string();
    let sealed = keys.seal(delayed.body, DELAYED.row("body", &id));
    sqlx::query(
        "INSERT INTO delayed_messages
           (id, message_key, key_id, body, properties, routing_key, attempts, panics, due_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond')",
    )
    .bind(&id)
    .bind(delayed.key)
    .bind(&*sealed.key_id)
    .bind(&sealed.bytes)
    .bind(encode(delayed.properties))
    .bind(delayed.routing_key)
    .bind(i32::try_from(delayed.attempts).unwrap_or(i32::MAX))
    .bind(i32::try_from(delayed.panics).unwrap_or(i32::MAX))
    .bind(delay_ms)
    .execute(pool)
    .await
    .map(drop)
}

/// Whether the message already waits for a retry (its delivery was redelivered after
/// the row was written and before the ack reached the broker). A row the scheduler is
/// republishing right now is waited for: once the scheduler deleted it, the message is
/// not waiting any more and this delivery is handled.
pub async fn is_waiting(pool: &PgPool, key: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM delayed_messages WHERE message_key = $1 FOR KEY SHARE)",
    )
    .bind(key)
    .fetch_one(pool)
    .await
}

/// Locks up to `limit` due rows, earliest first, skipping rows another worker holds. A
/// row whose body does not open (its key missing: `/readyz` then names it) or whose
/// properties do not decode (never written by this code) stays where it is, for a
/// person to look at, and is logged.
pub async fn due(
    tx: &mut Transaction<'_, Postgres>,
    keys: &Keyring,
    limit: i64,
) -> sqlx::Result<Vec<Due>> {
    let rows: Vec<StoredRetry> = sqlx::query_as(
        "SELECT id, message_key, key_id, body, properties FROM delayed_messages
         WHERE due_at <= now() ORDER BY due_at LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().filter_map(|row| row.open(keys)).collect())
}

/// A delayed row as stored: its body sealed under `key_id`.
struct StoredRetry {
    id: String,
    message_key: String,
    key_id: String,
    body: Vec<u8>,
    properties: Vec<u8>,
}

crate::store::from_row!(StoredRetry {
    id,
    message_key,
    key_id,
    body,
    properties
});

impl StoredRetry {
    /// The row as it is republished, or `None` (logged) when it cannot be.
    fn open(self, keys: &Keyring) -> Option<Due> {
        let opened = keys
            .open(&self.key_id, &self.body, DELAYED.row("body", &self.id))
            .map_err(|err| err.to_string())
            .and_then(|body| Ok((body, decode(&self.properties)?)));
        match opened {
            Ok((body, properties)) => Some(Due {
                id: self.id,
                body: body.to_vec(),
                properties,
            }),
            Err(why) => {
                tracing::error!(
                    message_id = %self.message_key,
                    error = %why,
                    "a delayed retry cannot be republished; left in place"
                );
                None
            }
        }
    }
}

/// Deletes the rows of messages the broker took.
pub async fn delete(tx: &mut Transaction<'_, Postgres>, ids: &[String]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM delayed_messages WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await
        .map(drop)
}

/// How long until the earliest row is due (zero if one is), and how many rows wait.
pub async fn outlook(pool: &PgPool) -> sqlx::Result<(Option<Duration>, i64)> {
    let (wait_ms, waiting): (Option<f64>, i64) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM min(due_at) - now())::float8 * 1000, count(*)
         FROM delayed_messages",
    )
    .fetch_one(pool)
    .await?;
    let wait = wait_ms.map(|ms| Duration::from_millis(ms.max(0.0) as u64));
    Ok((wait, waiting))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn properties_survive_their_wire_encoding_unchanged() {
        let mut headers = FieldTable::default();
        headers.insert("x-wallet-attempts".into(), AMQPValue::LongLongInt(3));
        headers.insert("traceparent".into(), AMQPValue::LongString("00-ab".into()));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id("msg_1".into())
            .with_correlation_id("corr_1".into())
            .with_timestamp(1_700_000_000)
            .with_headers(headers);
        assert_eq!(decode(&encode(&properties)), Ok(properties));
        assert_eq!(
            decode(&encode(&BasicProperties::default())),
            Ok(BasicProperties::default())
        );
    }
}
