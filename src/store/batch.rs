//! The two writing statements of a commit batch. A batch's transaction is
//! `BEGIN`, [`open`], [`super::wallet::load_wallets`] (when it touches wallets),
//! [`write()`] (when it changes them), [`super::outbox::insert_all`] (when it has
//! events) and `COMMIT`: at most six round trips, whatever the batch holds.
//!
//! Each statement chains its steps through data-modifying CTEs. Postgres runs those
//! in an unspecified order, so where the order matters (the claim before anything
//! else, customer locks before order rows) a step reads the previous one's output
//! first: `WHERE (SELECT count(*) FROM previous) >= 0` is evaluated once, before the
//! step writes its first row.

use super::orders::OrderRows;
use super::wallet::SealedTokens;
use crate::crypto::Keyring;
use crate::domain::wallet::Source;
use crate::domain::{Order, OrderStatus};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};

/// What a batch records before it looks at any wallet.
#[derive(Default)]
pub struct Opening<'a> {
    /// Every message of the batch: (message id, message type).
    pub messages: Vec<(&'a str, &'a str)>,
    /// Every customer the batch names: (id, email of a placed order, its message id).
    pub customers: Vec<(&'a str, Option<&'a str>, &'a str)>,
    /// Every placed order of the batch, with its message id.
    pub placed: Vec<(&'a str, &'a Order)>,
    /// The gateways the batch saves to.
    pub gateways: Vec<&'a str>,
}

/// What [`open`] found.
pub struct Opened {
    /// The message ids processed for the first time (the others are duplicates).
    pub claimed: HashSet<String>,
    /// Whether each gateway asked about exists and is enabled (absent: removed).
    pub gateways: HashMap<String, bool>,
}

/// The statement of [`open`]; its rows are the claimed message ids (without a
/// gateway state) and the gateways asked about (always with one).
const OPEN_STATEMENT: &str = "WITH claimed AS (
         INSERT INTO processed_messages (message_id, message_type)
         SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (message_id) DO NOTHING
         RETURNING message_id),
     named AS (
         SELECT id, email, message_id, position
         FROM UNNEST($3::text[], $4::text[], $5::text[]) WITH ORDINALITY
             AS t(id, email, message_id, position)),
     locked AS (
         INSERT INTO customers (id, email)
         SELECT id, (array_agg(email ORDER BY position DESC)
                     FILTER (WHERE email IS NOT NULL
                             AND message_id IN (SELECT message_id FROM claimed)))[1]
         FROM named
         WHERE (SELECT count(*) FROM claimed) >= 0
         GROUP BY id ORDER BY id
         ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, customers.email)
         RETURNING id),
     placed AS (
         SELECT DISTINCT ON (id) *
         FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
             $11::bool[], $12::text[], $13::int8[], $14::text[], $15::text[], $16::text[],
             $17::bytea[], $18::text[], $19::text[])
             WITH ORDINALITY AS t(message_id, id, customer_id, number, status, guest,
                 currency_code, total_amount_cents, payment_source_type,
                 payment_source_id, gateway_id, payment_source_token_sealed, metadata,
                 token_key_id, position)
         WHERE message_id IN (SELECT message_id FROM claimed)
         ORDER BY id, position DESC),
     recorded AS (
         INSERT INTO orders (id, customer_id, number, status, guest, currency_code,
             total_amount_cents, payment_source_type, payment_source_id, gateway_id,
             token_key_id, payment_source_token_sealed, payment_source_metadata, placed_at)
         SELECT id, customer_id, number, status, guest, currency_code,
             total_amount_cents, payment_source_type, payment_source_id, gateway_id,
             token_key_id, payment_source_token_sealed, metadata::jsonb, now()
         FROM placed
         WHERE (SELECT count(*) FROM locked) >= 0
         ORDER BY customer_id, id
         ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
             number = EXCLUDED.number, status = EXCLUDED.status, guest = EXCLUDED.guest,
             currency_code = EXCLUDED.currency_code,
             total_amount_cents = EXCLUDED.total_amount_cents,
             payment_source_type = EXCLUDED.payment_source_type,
             payment_source_id = EXCLUDED.payment_source_id,
             gateway_id = EXCLUDED.gateway_id,
             token_key_id = EXCLUDED.token_key_id,
             payment_source_token_sealed = EXCLUDED.payment_source_token_sealed,
             payment_source_metadata = EXCLUDED.payment_source_metadata,
             placed_at = COALESCE(orders.placed_at, now()), updated_at = now())
     SELECT message_id AS id, NULL::bool AS enabled FROM claimed
     UNION ALL
     SELECT id, enabled FROM gateways WHERE id = ANY($20)";

/// In one statement: claims the batch's message ids in the inbox; records and locks
/// its customers in id order (concurrent commits take customer locks in one order, so
/// they cannot deadlock on them); records the placed orders of the newly claimed
/// messages (an order named twice keeps the later description); and reads the state
/// of the gateways saved to. A duplicate message changes nothing: its customer is
/// locked, but keeps its email.
pub async fn open(
    conn: &mut PgConnection,
    keys: &Keyring,
    batch: &Opening<'_>,
) -> sqlx::Result<Opened> {
    let (message_ids, message_types): (Vec<&str>, Vec<&str>) =
        batch.messages.iter().copied().unzip();
    let customer_ids: Vec<&str> = batch.customers.iter().map(|c| c.0).collect();
    let emails: Vec<Option<&str>> = batch.customers.iter().map(|c| c.1).collect();
    let customer_messages: Vec<&str> = batch.customers.iter().map(|c| c.2).collect();
    let placed_messages: Vec<&str> = batch.placed.iter().map(|(m, _)| *m).collect();
    let mut orders = OrderRows::default();
    for (_, order) in &batch.placed {
        orders.push(keys, order);
    }
    let rows = sqlx::query(OPEN_STATEMENT)
        .bind(&message_ids)
        .bind(&message_types)
        .bind(&customer_ids)
        .bind(&emails)
        .bind(&customer_messages)
        .bind(&placed_messages)
        .bind(&orders.id)
        .bind(&orders.customer_id)
        .bind(&orders.number)
        .bind(&orders.status)
        .bind(&orders.guest)
        .bind(&orders.currency_code)
        .bind(&orders.total_amount_cents)
        .bind(&orders.payment_source_type)
        .bind(&orders.payment_source_id)
        .bind(&orders.gateway_id)
        .bind(&orders.payment_source_token)
        .bind(&orders.metadata)
        .bind(&orders.token_key_id)
        .bind(&batch.gateways)
        .fetch_all(conn)
        .await?;
    opened(rows)
}

/// The claimed message ids and the gateways' states from [`OPEN_STATEMENT`]'s rows.
fn opened(rows: Vec<PgRow>) -> sqlx::Result<Opened> {
    let mut opened = Opened {
        claimed: HashSet::new(),
        gateways: HashMap::new(),
    };
    for row in rows {
        let id: String = row.try_get("id")?;
        // Claimed ids come without a gateway state; gateways always with one.
        match row.try_get::<Option<bool>, _>("enabled")? {
            None => {
                opened.claimed.insert(id);
            }
            Some(enabled) => {
                opened.gateways.insert(id, enabled);
            }
        }
    }
    Ok(opened)
}

/// An order in checkout paying with a stored source.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub status: &'a OrderStatus,
    pub customer_payment_source_id: &'a str,
}

/// What the wallets of a batch look like after it, as differences.
#[derive(Default)]
pub struct Writes<'a> {
    /// New sources: (customer id, source, its tokens sealed).
    pub created: Vec<(&'a str, &'a Source, &'a SealedTokens)>,
    /// Ids of removed sources.
    pub removed: Vec<&'a str>,
    /// Each changed customer's chosen default (`None`: the customer has none).
    pub defaults: Vec<(&'a str, Option<&'a str>)>,
    /// Orders to attach stored sources to.
    pub attachments: Vec<Attachment<'a>>,
}

impl Writes<'_> {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.removed.is_empty()
            && self.defaults.is_empty()
            && self.attachments.is_empty()
    }
}

/// The statement of [`write()`]; returns the ids of the orders attached.
const WRITE_STATEMENT: &str = "WITH created AS (
         INSERT INTO customer_payment_sources (id, customer_id, gateway_id, name,
             metadata, reference, customer_token_sealed, payment_source_token_sealed,
             created_at, expires_at, key_id, fingerprint)
         SELECT id, customer_id, gateway_id, name, metadata::jsonb, reference,
             customer_token, payment_source_token, created_at, expires_at, key_id,
             fingerprint
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::bytea[], $8::bytea[], $9::timestamptz[], $10::timestamptz[],
             $19::text[], $20::bytea[])
             AS t(id, customer_id, gateway_id, name, metadata, reference,
                  customer_token, payment_source_token, created_at, expires_at, key_id,
                  fingerprint)),
     removed AS (
         DELETE FROM customer_payment_sources s USING UNNEST($11::text[]) AS r(id)
         WHERE s.id = r.id),
     defaults AS (
         SELECT * FROM UNNEST($12::text[], $13::text[]) AS t(customer_id, source_id)),
     cleared AS (
         DELETE FROM wallet_defaults d USING defaults
         WHERE d.customer_id = defaults.customer_id AND defaults.source_id IS NULL),
     chosen AS (
         INSERT INTO wallet_defaults (customer_id, source_id)
         SELECT customer_id, source_id FROM defaults WHERE source_id IS NOT NULL
         ON CONFLICT (customer_id) DO UPDATE
             SET source_id = EXCLUDED.source_id, updated_at = now())
     INSERT INTO orders (id, customer_id, status, customer_payment_source_id)
     SELECT * FROM UNNEST($14::text[], $15::text[], $16::text[], $17::text[])
     ON CONFLICT (id) DO UPDATE SET
         customer_payment_source_id = EXCLUDED.customer_payment_source_id,
         updated_at = now()
     WHERE orders.placed_at IS NULL AND orders.status <> ALL($18)
     RETURNING id";

/// In one statement: inserts the new sources, deletes the removed ones (a removed
/// default's row goes with its source, by the foreign key), records the changed
/// defaults, and records the attachments, except to orders already placed, approved or
/// cancelled (then the payment source never changes). Returns the ids of the orders
/// attached: an `order.placed` committing meanwhile is either seen here or comes
/// after. An order named twice keeps the later attachment.
pub async fn write(conn: &mut PgConnection, writes: &Writes<'_>) -> sqlx::Result<HashSet<String>> {
    let created = &writes.created;
    let column = |f: fn(&Source) -> &str| created.iter().map(|(_, s, _)| f(s)).collect::<Vec<_>>();
    let sealed =
        |f: fn(&SealedTokens) -> &[u8]| created.iter().map(|(_, _, t)| f(t)).collect::<Vec<_>>();
    let owners: Vec<&str> = created.iter().map(|(c, _, _)| *c).collect();
    let metadata: Vec<String> = created
        .iter()
        .map(|(_, s, _)| Value::Object(s.metadata.clone()).to_string())
        .collect();
    let references: Vec<Option<&str>> = created
        .iter()
        .map(|(_, s, _)| s.reference.as_deref())
        .collect();
    let created_at: Vec<DateTime<Utc>> = created.iter().map(|(_, s, _)| s.created_at).collect();
    let expires_at: Vec<Option<DateTime<Utc>>> =
        created.iter().map(|(_, s, _)| s.expires_at).collect();
    let key_ids: Vec<&str> = created.iter().map(|(_, _, t)| &*t.key_id).collect();
    let fingerprints: Vec<&[u8]> = created
        .iter()
        .map(|(_, s, _)| s.fingerprint.0.as_slice())
        .collect();
    let default_owners: Vec<&str> = writes.defaults.iter().map(|(c, _)| *c).collect();
    let default_sources: Vec<Option<&str>> = writes.defaults.iter().map(|(_, s)| *s).collect();
    let [
        attach_orders,
        attach_customers,
        attach_statuses,
        attach_sources,
    ] = attachment_columns(&writes.attachments);
    sqlx::query_scalar(WRITE_STATEMENT)
        .bind(column(|s| &s.id))
        .bind(&owners)
        .bind(column(|s| &s.gateway_id))
        .bind(column(|s| &s.name))
        .bind(&metadata)
        .bind(&references)
        .bind(sealed(|t| &t.customer_token))
        .bind(sealed(|t| &t.payment_source_token))
        .bind(&created_at)
        .bind(&expires_at)
        .bind(&writes.removed)
        .bind(&default_owners)
        .bind(&default_sources)
        .bind(&attach_orders)
        .bind(&attach_customers)
        .bind(&attach_statuses)
        .bind(&attach_sources)
        .bind(OrderStatus::LOCKED)
        .bind(&key_ids)
        .bind(&fingerprints)
        .fetch_all(conn)
        .await
        .map(|ids: Vec<String>| ids.into_iter().collect())
}

/// The attachments as [`WRITE_STATEMENT`]'s columns (order, customer, status, source),
/// one row per order in id order: an order named twice keeps the later attachment.
fn attachment_columns<'a>(attachments: &[Attachment<'a>]) -> [Vec<&'a str>; 4] {
    let mut latest: Vec<&Attachment<'a>> = Vec::with_capacity(attachments.len());
    for attachment in attachments {
        match latest
            .iter_mut()
            .find(|a| a.order_id == attachment.order_id)
        {
            Some(earlier) => *earlier = attachment,
            None => latest.push(attachment),
        }
    }
    latest.sort_by_key(|a| a.order_id);
    [
        latest.iter().map(|a| a.order_id).collect(),
        latest.iter().map(|a| a.customer_id).collect(),
        latest.iter().map(|a| a.status.as_str()).collect(),
        latest
            .iter()
            .map(|a| a.customer_payment_source_id)
            .collect(),
    ]
}
