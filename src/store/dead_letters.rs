//! The dead-letter store (docs/operations.md, the dead-letter store): one row per dead
//! letter, the failure groups kept beside them, and the audit log of what operators did.
//!
//! * [`ingest`]: the intake's batches, each row with its `wallet.dead_lettered` event;
//! * [`query`]: pages in (dead_lettered_at, id) order, one dead letter, the summary;
//! * [`replay`] and [`purge`]: batches that each change rows, their groups and the
//!   audit entry in one transaction;
//! * [`prune`]: retention; [`gauge`]: the `wallet_dead_letters{kind}` gauge.
//!
//! Every selection reads the dead letters not replayed yet (the partial indexes of
//! migration 0007); a replayed one stays as history, shown by [`query::show`], until
//! retention removes it.

pub mod gauge;
mod groups;
pub mod ingest;
pub mod prune;
pub mod purge;
pub mod query;
pub mod replay;

use super::keys::DEAD_LETTERS;
use crate::crypto::DataKeys;
use crate::domain::TraceContext;
use crate::domain::failure_group::FailureGroup;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use std::fmt;

/// A dead letter as the intake read it, before it is stored.
#[derive(Clone)]
pub struct NewDeadLetter {
    /// See [`crate::domain::dead_letter::dedupe_key`].
    pub dedupe_key: Vec<u8>,
    pub message_id: Option<String>,
    pub routing_key: Option<String>,
    pub error: String,
    pub detail: String,
    pub attempts: Option<i32>,
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub correlation_id: Option<String>,
    pub group: FailureGroup,
    pub dead_lettered_at: DateTime<Utc>,
    /// Byte for byte; may hold payment tokens: never logged.
    pub body: Vec<u8>,
    pub properties: Value,
    pub headers: Value,
    /// The message's trace, which its `wallet.dead_lettered` event goes on with.
    pub trace: Option<TraceContext>,
}

impl fmt::Debug for NewDeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDeadLetter")
            .field("message_id", &self.message_id)
            .field("routing_key", &self.routing_key)
            .field("error", &self.error)
            .field("body_size", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A stored dead letter, its body and headers opened. `Debug` leaves the body out: it
/// may hold payment tokens.
#[derive(Clone)]
pub struct DeadLetter {
    pub id: i64,
    pub message_id: Option<String>,
    pub routing_key: Option<String>,
    pub error: String,
    pub detail: String,
    pub attempts: Option<i32>,
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub correlation_id: Option<String>,
    pub group_key: String,
    pub dead_lettered_at: DateTime<Utc>,
    pub ingested_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
    pub replayed_by: Option<String>,
    pub body: Vec<u8>,
    pub properties: Value,
    pub headers: Value,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("message_id", &self.message_id)
            .field("routing_key", &self.routing_key)
            .field("error", &self.error)
            .field("body_size", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// A dead letter as stored: body and headers sealed under `key_id`.
pub struct Stored {
    id: i64,
    message_id: Option<String>,
    routing_key: Option<String>,
    error: String,
    detail: String,
    attempts: Option<i32>,
    order_id: Option<String>,
    customer_id: Option<String>,
    correlation_id: Option<String>,
    group_key: String,
    dead_lettered_at: DateTime<Utc>,
    ingested_at: DateTime<Utc>,
    replayed_at: Option<DateTime<Utc>>,
    replayed_by: Option<String>,
    key_id: String,
    body: Vec<u8>,
    headers: Vec<u8>,
    properties: Value,
}

crate::store::from_row!(Stored {
    id,
    message_id,
    routing_key,
    error,
    detail,
    attempts,
    order_id,
    customer_id,
    correlation_id,
    group_key,
    dead_lettered_at,
    ingested_at,
    replayed_at,
    replayed_by,
    key_id,
    body,
    headers,
    properties
});

impl Stored {
    /// Opens body and headers. One that does not open (its key missing, or the row
    /// altered) is a decode error naming the row and the key, never a value.
    pub fn open(self, keys: &DataKeys) -> sqlx::Result<DeadLetter> {
        let id = self.id.to_string();
        let open = |column, sealed: &[u8]| {
            keys.open(&self.key_id, sealed, DEAD_LETTERS.row(column, &id))
                .map_err(|err| sqlx::Error::Decode(err.into()))
        };
        let body = open("body", &self.body)?.to_vec();
        let headers = serde_json::from_slice(&open("headers", &self.headers)?)
            .map_err(|err| sqlx::Error::Decode(err.into()))?;
        Ok(DeadLetter {
            id: self.id,
            message_id: self.message_id,
            routing_key: self.routing_key,
            error: self.error,
            detail: self.detail,
            attempts: self.attempts,
            order_id: self.order_id,
            customer_id: self.customer_id,
            correlation_id: self.correlation_id,
            group_key: self.group_key,
            dead_lettered_at: self.dead_lettered_at,
            ingested_at: self.ingested_at,
            replayed_at: self.replayed_at,
            replayed_by: self.replayed_by,
            body,
            properties: self.properties,
            headers,
        })
    }
}

/// Opens every row of a page.
pub fn open_all(rows: Vec<Stored>, keys: &DataKeys) -> sqlx::Result<Vec<DeadLetter>> {
    rows.into_iter().map(|row| row.open(keys)).collect()
}

/// The columns of [`Stored`].
pub const COLUMNS: &str = "id, message_id, routing_key, error, detail, attempts, \
    order_id, customer_id, correlation_id, group_key, dead_lettered_at, ingested_at, \
    replayed_at, replayed_by, key_id, body, headers, properties";

/// Which dead letters (not replayed yet) a command takes: those matching every
/// criterion given; none given: all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filter {
    /// By message id (`--id`); empty: any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// By original routing key, which is the message type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Dead-lettered at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
}

impl Filter {
    pub fn is_all(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the failure groups alone count its matches (exactly, without reading
    /// the dead letters): it names nothing but an error kind, a type or a group.
    fn counted_by_groups(&self) -> bool {
        self.ids.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.order.is_none()
            && self.customer.is_none()
    }

    /// `WHERE` for dead letters not replayed yet that match, after `after` if given.
    fn push_where(&self, sql: &mut QueryBuilder<'_, Postgres>, after: Option<&Cursor>) {
        sql.push(" WHERE replayed_at IS NULL");
        if !self.ids.is_empty() {
            sql.push(" AND message_id = ANY(")
                .push_bind(self.ids.clone())
                .push(")");
        }
        for (column, value) in [
            ("error", &self.error),
            ("routing_key", &self.kind),
            ("group_key", &self.group),
            ("order_id", &self.order),
            ("customer_id", &self.customer),
        ] {
            if let Some(value) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(since) = self.since {
            sql.push(" AND dead_lettered_at >= ").push_bind(since);
        }
        if let Some(until) = self.until {
            sql.push(" AND dead_lettered_at < ").push_bind(until);
        }
        if let Some(after) = after {
            sql.push(" AND (dead_lettered_at, id) > (")
                .push_bind(after.at)
                .push(", ")
                .push_bind(after.id)
                .push(")");
        }
    }
}

/// Where a page ends: the next one starts after this (dead_lettered_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: i64,
}

impl Cursor {
    pub fn of(letter: &DeadLetter) -> Self {
        Self {
            at: letter.dead_lettered_at,
            id: letter.id,
        }
    }

    /// Reads what [`Cursor`]'s `Display` wrote: `<RFC 3339 time>/<id>`.
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.rsplit_once('/')?;
        Some(Self {
            at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            id: id.parse().ok()?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.to_rfc3339_opts(SecondsFormat::Micros, true);
        write!(f, "{at}/{}", self.id)
    }
}

/// A time as the dlq commands print it: RFC 3339, milliseconds, UTC (the form of
/// `x-wallet-dead-lettered-at`).
pub fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_printed() {
        let cursor = Cursor {
            at: "2026-11-27T16:00:00.123456Z".parse().unwrap(),
            id: 42,
        };
        assert_eq!(cursor.to_string(), "2026-11-27T16:00:00.123456Z/42");
        assert_eq!(Cursor::parse(&cursor.to_string()), Some(cursor));
        assert_eq!(Cursor::parse("yesterday/4"), None);
        assert_eq!(Cursor::parse("2026-11-27T16:00:00Z"), None);
    }
}
