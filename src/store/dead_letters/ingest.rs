//! Storing a batch of dead letters from the intake: the new rows, their groups and
//! their `wallet.dead_lettered` events in one transaction. A dead letter already stored
//! (same dedupe key: a redelivered intake message, or the same message dead-lettered
//! twice in one life) adds nothing and announces nothing.

use super::NewDeadLetter;
use super::groups::{self, Added};
use crate::crypto::Keyring;
use crate::domain::events::{self, Cause, DeadLettered};
use crate::store::keys::DEAD_LETTERS;
use crate::store::outbox::{self, PendingEvent};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashSet};

/// What a batch added.
#[derive(Debug, Default)]
pub struct Ingested {
    /// The events of the new dead letters, for the relay.
    pub events: Vec<PendingEvent>,
    /// New dead letters by error kind.
    pub kinds: BTreeMap<String, u64>,
}

/// Stores `letters`; those already stored add nothing.
pub async fn ingest(
    pool: &PgPool,
    keys: &Keyring,
    letters: &[NewDeadLetter],
) -> sqlx::Result<Ingested> {
    crate::store::in_transaction(pool, async |conn| store(conn, keys, letters).await).await
}

async fn store(
    conn: &mut PgConnection,
    keys: &Keyring,
    letters: &[NewDeadLetter],
) -> sqlx::Result<Ingested> {
    let mut new: HashSet<Vec<u8>> = insert(&mut *conn, keys, letters)
        .await?
        .into_iter()
        .collect();
    let mut added: BTreeMap<String, Added> = BTreeMap::new();
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    let mut announced = Vec::new();
    for letter in letters {
        // Each new key once: a batch may hold the same dead letter twice.
        if !new.remove(&letter.dedupe_key) {
            continue;
        }
        let at = letter.dead_lettered_at;
        added
            .entry(letter.group.key.clone())
            .or_insert_with(|| Added {
                error: letter.error.clone(),
                routing_key: letter.routing_key.clone(),
                label: letter.group.label.clone(),
                count: 0,
                first: at,
                last: at,
            })
            .add(at);
        *kinds.entry(letter.error.clone()).or_default() += 1;
        announced.push(announcement(letter));
    }
    groups::add(&mut *conn, &added).await?;
    let events = outbox::insert_all(conn, keys, announced).await?;
    Ok(Ingested { events, kinds })
}

/// Inserts the rows whose dedupe key is new, bodies and headers sealed; returns those
/// keys.
async fn insert(
    conn: &mut PgConnection,
    keys: &Keyring,
    letters: &[NewDeadLetter],
) -> sqlx::Result<Vec<Vec<u8>>> {
    let ids = next_ids(&mut *conn, letters.len()).await?;
    let (bodies, headers) = seal(keys, &ids, letters);
    let column = |f: fn(&NewDeadLetter) -> Option<&str>| -> Vec<Option<&str>> {
        letters.iter().map(f).collect()
    };
    let errors: Vec<&str> = letters.iter().map(|l| l.error.as_str()).collect();
    let details: Vec<&str> = letters.iter().map(|l| l.detail.as_str()).collect();
    let attempts: Vec<Option<i32>> = letters.iter().map(|l| l.attempts).collect();
    let groups: Vec<&str> = letters.iter().map(|l| l.group.key.as_str()).collect();
    let times: Vec<_> = letters.iter().map(|l| l.dead_lettered_at).collect();
    let properties: Vec<&serde_json::Value> = letters.iter().map(|l| &l.properties).collect();
    let dedupe: Vec<&[u8]> = letters.iter().map(|l| l.dedupe_key.as_slice()).collect();
    sqlx::query_scalar(
        "INSERT INTO dead_letters
             (dedupe_key, message_id, routing_key, error, detail, attempts, order_id,
              customer_id, correlation_id, group_key, dead_lettered_at, body, properties,
              headers, id, key_id)
         SELECT *, $16 FROM UNNEST($1::bytea[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                              $11::timestamptz[], $12::bytea[], $13::jsonb[], $14::bytea[],
                              $15::bigint[]) AS u
         ON CONFLICT (dedupe_key) DO NOTHING
         RETURNING dedupe_key",
    )
    .bind(&dedupe)
    .bind(column(|l| l.message_id.as_deref()))
    .bind(column(|l| l.routing_key.as_deref()))
    .bind(&errors)
    .bind(&details)
    .bind(&attempts)
    .bind(column(|l| l.order_id.as_deref()))
    .bind(column(|l| l.customer_id.as_deref()))
    .bind(column(|l| l.correlation_id.as_deref()))
    .bind(&groups)
    .bind(&times)
    .bind(&bodies)
    .bind(&properties)
    .bind(&headers)
    .bind(&ids)
    .bind(keys.active_id())
    .fetch_all(conn)
    .await
}

/// `n` row ids from the table's sequence: each sealed value is bound to its row's id,
/// so the ids come before the insert. (Those of rows already stored go unused.)
async fn next_ids(conn: &mut PgConnection, n: usize) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence('dead_letters', 'id')) FROM generate_series(1, $1)",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
}

/// Each letter's body and headers sealed for the row `ids[i]`.
fn seal(keys: &Keyring, ids: &[i64], letters: &[NewDeadLetter]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut bodies, mut headers) = (Vec::new(), Vec::new());
    for (letter, id) in letters.iter().zip(ids) {
        let id = id.to_string();
        bodies.push(keys.seal(&letter.body, DEAD_LETTERS.row("body", &id)).bytes);
        let text = serde_json::to_vec(&letter.headers).unwrap_or_default();
        headers.push(keys.seal(&text, DEAD_LETTERS.row("headers", &id)).bytes);
    }
    (bodies, headers)
}

/// `wallet.dead_lettered` for a new dead letter (docs/messages.md,
/// `wallet.dead_lettered`), in the trace of the message it announces.
fn announcement(letter: &NewDeadLetter) -> events::OutboundEvent {
    let cause = Cause {
        id: letter.message_id.as_deref(),
        correlation_id: letter.correlation_id.as_deref(),
    };
    let data = DeadLettered {
        message_id: letter.message_id.clone(),
        message_type: letter
            .routing_key
            .clone()
            .unwrap_or_else(|| UNKNOWN_TYPE.to_owned()),
        error: letter.error.clone(),
        detail: letter.detail.clone(),
        attempts: letter.attempts.map_or(0, |n| u32::try_from(n).unwrap_or(0)),
        order_id: letter.order_id.clone(),
    };
    let mut event = events::outbound(cause, data);
    event.trace = letter.trace.clone();
    event
}

/// The `message_type` of a dead letter whose type nobody knows.
pub const UNKNOWN_TYPE: &str = "unknown";
