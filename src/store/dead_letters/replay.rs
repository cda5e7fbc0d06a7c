//! Replay (docs/operations.md, replay): a batch of dead letters goes back into the
//! outbox — body byte for byte, its properties and headers, without the dead-letter
//! headers and with `x-wallet-replayed-at` — and is marked replayed, in one
//! transaction with its groups and its audit entry. Publishing is the caller's (or
//! a relay sweep's) business, after the commit.

use super::groups;
use super::{COLUMNS, Cursor, DeadLetter, Filter, open_all, time_text};
use crate::crypto::{DataKeys, Keyring};
use crate::domain::dead_letter::REPLAYED_AT;
use crate::store::outbox::{self, PendingEvent, Replay};
use chrono::Utc;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

/// What one batch did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Back in the outbox and marked replayed.
    pub replayed: Vec<DeadLetter>,
    /// Selected but left as they are: no routing key the worker consumes.
    pub not_replayable: Vec<DeadLetter>,
    /// The outbox rows of `replayed`, to publish.
    pub events: Vec<PendingEvent>,
    /// Where the next batch starts; `None` when this one found nothing.
    pub next: Option<Cursor>,
}

/// Who replays, for the rows and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct By<'a> {
    pub actor: &'a str,
    /// The [`crate::store::audit`] entry that counts the replayed rows.
    pub audit_id: i64,
}

/// Replays up to `limit` dead letters matching `filter` after `after` whose routing
/// key is one of `routable`. Rows another replay or purge holds are skipped.
pub async fn batch(
    pool: &PgPool,
    keys: &Keyring,
    by: By<'_>,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
    routable: &[&str],
) -> sqlx::Result<Batch> {
    crate::store::in_transaction(pool, async |conn| {
        replay(conn, keys, by, filter, after, limit, routable).await
    })
    .await
}

async fn replay(
    conn: &mut PgConnection,
    keys: &Keyring,
    by: By<'_>,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
    routable: &[&str],
) -> sqlx::Result<Batch> {
    let rows = lock(&mut *conn, keys.data_keys(), filter, after, limit).await?;
    let next = rows.last().map(Cursor::of);
    let (replayed, not_replayable): (Vec<DeadLetter>, Vec<DeadLetter>) =
        rows.into_iter().partition(|row| {
            row.routing_key
                .as_deref()
                .is_some_and(|k| routable.contains(&k))
        });
    let now = Utc::now();
    let replays = replayed
        .iter()
        .map(|row| Replay {
            routing_key: row.routing_key.as_deref().unwrap_or_default(),
            message_id: row.message_id.as_deref(),
            correlation_id: row.correlation_id.as_deref(),
            body: &row.body,
            properties: &row.properties,
            headers: replay_headers(&row.headers, &time_text(now)),
        })
        .collect();
    let events = outbox::insert_replays(&mut *conn, keys, replays).await?;
    let ids: Vec<i64> = replayed.iter().map(|row| row.id).collect();
    sqlx::query("UPDATE dead_letters SET replayed_at = $2, replayed_by = $3 WHERE id = ANY($1)")
        .bind(&ids)
        .bind(now)
        .bind(by.actor)
        .execute(&mut *conn)
        .await?;
    let removed = groups::tally(replayed.iter().map(|row| row.group_key.as_str()));
    groups::remove(&mut *conn, &removed).await?;
    crate::store::audit::counted(&mut *conn, by.audit_id, ids.len() as i64).await?;
    Ok(Batch {
        replayed,
        not_replayable,
        events,
        next,
    })
}

/// The next `limit` matching rows after `after`, locked; rows locked elsewhere skipped.
async fn lock(
    conn: &mut PgConnection,
    keys: &DataKeys,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<DeadLetter>> {
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM dead_letters"));
    filter.push_where(&mut sql, after);
    sql.push(" ORDER BY dead_lettered_at, id LIMIT ")
        .push_bind(limit)
        .push(" FOR UPDATE SKIP LOCKED");
    open_all(sql.build_query_as().fetch_all(conn).await?, keys)
}

/// The headers a replayed message carries: its own, without the worker's `x-wallet-*`
/// bookkeeping and the broker's dead-letter history, and with `x-wallet-replayed-at`.
pub fn replay_headers(stored: &Value, replayed_at: &str) -> Value {
    let mut headers = stored.as_object().cloned().unwrap_or_default();
    headers.retain(|name, _| {
        !(name.starts_with("x-wallet-")
            || name == "x-death"
            || name == "x-delivery-count"
            || name.starts_with("x-first-death-")
            || name.starts_with("x-last-death-"))
    });
    headers.insert(
        REPLAYED_AT.to_owned(),
        Value::String(replayed_at.to_owned()),
    );
    Value::Object(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_replay_drops_the_dead_letter_headers_and_says_when_it_was_replayed() {
        let stored = json!({
            "traceparent": "00-aa-bb-01",
            "x-custom": {"i32": 7},
            "x-wallet-error": "malformed",
            "x-wallet-attempts": {"i64": 1},
            "x-wallet-replayed-at": "before",
            "x-death": {"array": []},
            "x-delivery-count": {"i64": 3},
            "x-first-death-reason": "delivery_limit",
        });
        assert_eq!(
            replay_headers(&stored, "now"),
            json!({"traceparent": "00-aa-bb-01", "x-custom": {"i32": 7}, "x-wallet-replayed-at": "now"})
        );
    }
}
