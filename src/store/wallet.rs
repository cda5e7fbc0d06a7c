//! Customer payment sources: the wallet, and the rules that need its rows (wallet
//! rules: availability, the default, the cap).
//!
//! A source is *available* when its gateway exists and is enabled and the card has not
//! expired. The customer's *default* is the chosen one (`wallet_defaults`) while it is
//! available, else the most recently saved available source; every change to a wallet
//! records that choice again ([`settle_default`]), so the stored default follows.
//!
//! Writers of one customer's wallet serialize on the customer's row
//! ([`lock_customer`]): a save at the cap, a removal and a default change see each
//! other's commits, never a snapshot from before them.

use crate::domain::Secret;
use crate::domain::events::SourceSummary;
use crate::domain::ids;
use crate::domain::wallet::{Source as DomainSource, Wallet as DomainWallet};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;

/// A source to store, as the gateway returned it.
#[derive(Debug)]
pub struct NewSource<'a> {
    pub customer_id: &'a str,
    pub gateway_id: &'a str,
    pub name: &'a str,
    pub metadata: &'a Map<String, Value>,
    pub reference: &'a str,
    pub customer_token: &'a Secret,
    pub payment_source_token: &'a Secret,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored source with its tokens, for attaching.
#[derive(Debug, Clone)]
pub struct StoredSource {
    pub id: String,
    pub customer_id: String,
    pub gateway_id: String,
    pub metadata: Map<String, Value>,
    pub customer_token: Secret,
    pub payment_source_token: Secret,
    pub expires_at: Option<DateTime<Utc>>,
    /// Its gateway exists and is enabled.
    pub gateway_enabled: bool,
}

/// A stored source as listings show it: never a token.
#[derive(Debug, Clone, Serialize)]
pub struct SourceListing {
    pub id: String,
    pub customer_id: String,
    pub gateway_id: String,
    pub name: String,
    pub metadata: Map<String, Value>,
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub default: bool,
    pub expired: bool,
    pub available: bool,
}

/// What the wallet holds that a save decides on, read after [`lock_customer`].
#[derive(Debug)]
pub struct SaveState {
    /// `None`: no such gateway; `Some(false)`: disabled.
    pub gateway_enabled: Option<bool>,
    /// Unexpired sources the customer holds (what the cap counts).
    pub held: i64,
    /// The same card, already in the wallet.
    pub existing: Option<SourceSummary>,
}

/// The condition "available at `$now`" on a source `s` joined to its gateway `g`.
const AVAILABLE: &str = "g.enabled IS TRUE AND (s.expires_at IS NULL OR s.expires_at > $2)";

/// Locks the customer's row until the transaction ends: `exclusive` for writers of the
/// wallet, shared for attaches (which only need it to stay as it is). False when the
/// customer is unknown.
pub async fn lock_customer(
    conn: &mut PgConnection,
    customer_id: &str,
    exclusive: bool,
) -> sqlx::Result<bool> {
    let sql = if exclusive {
        "SELECT 1 FROM customers WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT 1 FROM customers WHERE id = $1 FOR SHARE"
    };
    let row = sqlx::query(sql)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

/// The gateway's state, the cap count and the same card, in one round trip.
pub async fn save_state(
    conn: &mut PgConnection,
    source: &NewSource<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<SaveState> {
    let row = sqlx::query(
        "SELECT (SELECT enabled FROM gateways WHERE id = $3) AS gateway_enabled,
                (SELECT count(*) FROM customer_payment_sources
                 WHERE customer_id = $1 AND (expires_at IS NULL OR expires_at > $2)) AS held,
                e.id, e.gateway_id, e.name, e.metadata
         FROM (SELECT 1) AS one
         LEFT JOIN customer_payment_sources e
           ON e.customer_id = $1 AND e.gateway_id = $3 AND e.payment_source_token = $4",
    )
    .bind(source.customer_id)
    .bind(now)
    .bind(source.gateway_id)
    .bind(source.payment_source_token.expose())
    .fetch_one(conn)
    .await?;
    let existing = match row.try_get::<Option<String>, _>("id")? {
        Some(id) => Some(SourceSummary {
            id,
            gateway_id: row.try_get("gateway_id")?,
            name: row.try_get("name")?,
            metadata: row.try_get::<Json<Map<String, Value>>, _>("metadata")?.0,
            default: false,
        }),
        None => None,
    };
    Ok(SaveState {
        gateway_enabled: row.try_get("gateway_enabled")?,
        held: row.try_get("held")?,
        existing,
    })
}

/// Stores a new source (the caller holds the customer's lock and checked the card is
/// not held yet). `created_at` is the clock time, not the transaction's start, so
/// several saves in one transaction keep their order for "most recently saved".
pub async fn insert(
    conn: &mut PgConnection,
    source: &NewSource<'_>,
) -> sqlx::Result<SourceSummary> {
    let id = ids::customer_payment_source_id();
    sqlx::query(
        "INSERT INTO customer_payment_sources (id, customer_id, gateway_id, name, metadata,
             reference, customer_token, payment_source_token, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp())",
    )
    .bind(&id)
    .bind(source.customer_id)
    .bind(source.gateway_id)
    .bind(source.name)
    .bind(Json(source.metadata))
    .bind(source.reference)
    .bind(source.customer_token.expose())
    .bind(source.payment_source_token.expose())
    .bind(source.expires_at)
    .execute(conn)
    .await?;
    Ok(SourceSummary {
        id,
        gateway_id: source.gateway_id.to_owned(),
        name: source.name.to_owned(),
        metadata: source.metadata.clone(),
        default: false,
    })
}

/// Records the customer's default as the rules define it now and returns it: the
/// chosen source while available, else the most recently saved available one, else
/// none.
pub async fn settle_default(
    conn: &mut PgConnection,
    customer_id: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    let sql = format!(
        "WITH chosen AS (
             SELECT s.id FROM customer_payment_sources s
             LEFT JOIN gateways g ON g.id = s.gateway_id
             LEFT JOIN wallet_defaults d ON d.customer_id = s.customer_id AND d.source_id = s.id
             WHERE s.customer_id = $1 AND {AVAILABLE}
             ORDER BY d.source_id IS NOT NULL DESC, s.created_at DESC, s.id DESC
             LIMIT 1),
         cleared AS (
             DELETE FROM wallet_defaults
             WHERE customer_id = $1 AND NOT EXISTS (SELECT 1 FROM chosen)),
         recorded AS (
             INSERT INTO wallet_defaults (customer_id, source_id) SELECT $1, id FROM chosen
             ON CONFLICT (customer_id) DO UPDATE
                 SET source_id = EXCLUDED.source_id, updated_at = now()
             WHERE wallet_defaults.source_id <> EXCLUDED.source_id)
         SELECT id FROM chosen"
    );
    sqlx::query_scalar(&sql)
        .bind(customer_id)
        .bind(now)
        .fetch_optional(conn)
        .await
}

/// Makes `source_id` the customer's chosen default.
pub async fn choose_default(
    conn: &mut PgConnection,
    customer_id: &str,
    source_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO wallet_defaults (customer_id, source_id) VALUES ($1, $2)
         ON CONFLICT (customer_id) DO UPDATE SET source_id = EXCLUDED.source_id, updated_at = now()",
    )
    .bind(customer_id)
    .bind(source_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The source `id` if it belongs to `customer_id`, share-locked until the transaction
/// ends (a removal waits for it); `None` for an unknown id and for another customer's
/// source alike, so ownership never reveals existence.
pub async fn find_owned(
    conn: &mut PgConnection,
    id: &str,
    customer_id: &str,
) -> sqlx::Result<Option<StoredSource>> {
    let row = sqlx::query(
        "SELECT s.id, s.customer_id, s.gateway_id, s.metadata, s.customer_token,
                s.payment_source_token, s.expires_at, g.enabled IS TRUE AS gateway_enabled
         FROM customer_payment_sources s LEFT JOIN gateways g ON g.id = s.gateway_id
         WHERE s.id = $1 AND s.customer_id = $2
         FOR SHARE OF s",
    )
    .bind(id)
    .bind(customer_id)
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let metadata: Json<Map<String, Value>> = row.try_get("metadata")?;
    Ok(Some(StoredSource {
        id: row.try_get("id")?,
        customer_id: row.try_get("customer_id")?,
        gateway_id: row.try_get("gateway_id")?,
        metadata: metadata.0,
        customer_token: Secret::new(row.try_get::<String, _>("customer_token")?),
        payment_source_token: Secret::new(row.try_get::<String, _>("payment_source_token")?),
        expires_at: row.try_get("expires_at")?,
        gateway_enabled: row.try_get("gateway_enabled")?,
    }))
}

/// Deletes the customer's source `id`, tokens and all; false when the customer holds
/// no such source.
pub async fn remove(conn: &mut PgConnection, id: &str, customer_id: &str) -> sqlx::Result<bool> {
    let done =
        sqlx::query("DELETE FROM customer_payment_sources WHERE id = $1 AND customer_id = $2")
            .bind(id)
            .bind(customer_id)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The customer's sources with their default and availability at `now`: the default
/// first, then newest first; the unavailable ones only with `all`.
pub async fn list(
    pool: &PgPool,
    customer_id: &str,
    now: DateTime<Utc>,
    all: bool,
) -> sqlx::Result<Vec<SourceListing>> {
    let sql = format!(
        "WITH listed AS (
             SELECT s.id, s.customer_id, s.gateway_id, s.name, s.metadata, s.reference,
                    s.created_at, s.expires_at IS NOT NULL AND s.expires_at <= $2 AS expired,
                    {AVAILABLE} AS available, d.source_id IS NOT NULL AS chosen
             FROM customer_payment_sources s
             LEFT JOIN gateways g ON g.id = s.gateway_id
             LEFT JOIN wallet_defaults d ON d.customer_id = s.customer_id AND d.source_id = s.id
             WHERE s.customer_id = $1),
         default_source AS (
             SELECT id FROM listed WHERE available
             ORDER BY chosen DESC, created_at DESC, id DESC LIMIT 1)
         SELECT listed.*, listed.id IN (SELECT id FROM default_source) AS is_default
         FROM listed WHERE available OR $3
         ORDER BY is_default DESC, created_at DESC, id DESC"
    );
    let rows = sqlx::query(&sql)
        .bind(customer_id)
        .bind(now)
        .bind(all)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            let metadata: Json<Map<String, Value>> = row.try_get("metadata")?;
            Ok(SourceListing {
                id: row.try_get("id")?,
                customer_id: row.try_get("customer_id")?,
                gateway_id: row.try_get("gateway_id")?,
                name: row.try_get("name")?,
                metadata: metadata.0,
                reference: row.try_get("reference")?,
                created_at: row.try_get("created_at")?,
                default: row.try_get("is_default")?,
                expired: row.try_get("expired")?,
                available: row.try_get("available")?,
            })
        })
        .collect()
}

// ---- set-based: the wallets of a whole commit batch ----

/// Locks the rows of the existing `customers` until the transaction ends, in id order,
/// so concurrent commits take them in one order and cannot deadlock on them.
pub async fn lock_customers(conn: &mut PgConnection, customers: &[&str]) -> sqlx::Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT id FROM customers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(customers)
        .fetch_all(conn)
        .await?;
    Ok(())
}

/// The wallets of `customers` (locked by the caller), with each source's gateway state
/// and the chosen default; a customer without sources has an empty wallet.
pub async fn load_wallets(
    conn: &mut PgConnection,
    customers: &[&str],
) -> sqlx::Result<HashMap<String, DomainWallet>> {
    let mut wallets: HashMap<String, DomainWallet> = customers
        .iter()
        .map(|c| {
            let wallet = DomainWallet {
                customer_id: (*c).to_owned(),
                sources: Vec::new(),
                chosen_default: None,
            };
            ((*c).to_owned(), wallet)
        })
        .collect();
    if customers.is_empty() {
        return Ok(wallets);
    }
    let rows = sqlx::query(
        "SELECT s.customer_id, s.id, s.gateway_id, s.name, s.metadata, s.reference,
                s.customer_token, s.payment_source_token, s.created_at, s.expires_at,
                g.enabled IS TRUE AS gateway_enabled, d.source_id IS NOT NULL AS chosen
         FROM customer_payment_sources s
         LEFT JOIN gateways g ON g.id = s.gateway_id
         LEFT JOIN wallet_defaults d ON d.customer_id = s.customer_id AND d.source_id = s.id
         WHERE s.customer_id = ANY($1)",
    )
    .bind(customers)
    .fetch_all(conn)
    .await?;
    for row in rows {
        let customer: String = row.try_get("customer_id")?;
        let source = DomainSource {
            id: row.try_get("id")?,
            gateway_id: row.try_get("gateway_id")?,
            name: row.try_get("name")?,
            metadata: row.try_get::<Json<Map<String, Value>>, _>("metadata")?.0,
            reference: row.try_get("reference")?,
            customer_token: Secret::new(row.try_get::<String, _>("customer_token")?),
            payment_source_token: Secret::new(row.try_get::<String, _>("payment_source_token")?),
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            gateway_enabled: row.try_get("gateway_enabled")?,
        };
        let Some(wallet) = wallets.get_mut(&customer) else {
            continue;
        };
        if row.try_get("chosen")? {
            wallet.chosen_default = Some(source.id.clone());
        }
        wallet.sources.push(source);
    }
    Ok(wallets)
}

/// Whether each of `gateways` exists and is enabled (absent: removed).
pub async fn gateway_states(
    conn: &mut PgConnection,
    gateways: &[&str],
) -> sqlx::Result<HashMap<String, bool>> {
    if gateways.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT id, enabled FROM gateways WHERE id = ANY($1)")
            .bind(gateways)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Writes what changed between the wallets as loaded (`before`) and as the batch left
/// them (`after`): one statement each for the new sources, the removed ones and the
/// changed defaults, in that order (a removed default's row goes with its source).
pub async fn write_changes(
    conn: &mut PgConnection,
    before: &HashMap<String, DomainWallet>,
    after: &HashMap<String, DomainWallet>,
) -> sqlx::Result<()> {
    let mut created: Vec<(&str, &DomainSource)> = Vec::new();
    let mut removed: Vec<&str> = Vec::new();
    let mut defaults: Vec<(&str, Option<&str>)> = Vec::new();
    for (customer, now) in after {
        let Some(then) = before.get(customer) else {
            continue;
        };
        let held = |wallet: &DomainWallet, id: &str| wallet.sources.iter().any(|s| s.id == id);
        created.extend(
            now.sources
                .iter()
                .filter(|s| !held(then, &s.id))
                .map(|s| (customer.as_str(), s)),
        );
        removed.extend(
            then.sources
                .iter()
                .filter(|s| !held(now, &s.id))
                .map(|s| s.id.as_str()),
        );
        if then.chosen_default != now.chosen_default {
            defaults.push((customer, now.chosen_default.as_deref()));
        }
    }
    insert_sources(conn, &created).await?;
    if !removed.is_empty() {
        sqlx::query("DELETE FROM customer_payment_sources WHERE id = ANY($1)")
            .bind(&removed)
            .execute(&mut *conn)
            .await?;
    }
    record_defaults(conn, &defaults).await
}

async fn insert_sources(
    conn: &mut PgConnection,
    created: &[(&str, &DomainSource)],
) -> sqlx::Result<()> {
    if created.is_empty() {
        return Ok(());
    }
    let column =
        |f: fn(&DomainSource) -> &str| created.iter().map(|(_, s)| f(s)).collect::<Vec<_>>();
    let customers: Vec<&str> = created.iter().map(|(c, _)| *c).collect();
    let metadata: Vec<String> = created
        .iter()
        .map(|(_, s)| Value::Object(s.metadata.clone()).to_string())
        .collect();
    let references: Vec<Option<&str>> = created
        .iter()
        .map(|(_, s)| s.reference.as_deref())
        .collect();
    let created_at: Vec<DateTime<Utc>> = created.iter().map(|(_, s)| s.created_at).collect();
    let expires_at: Vec<Option<DateTime<Utc>>> =
        created.iter().map(|(_, s)| s.expires_at).collect();
    sqlx::query(
        "INSERT INTO customer_payment_sources (id, customer_id, gateway_id, name, metadata,
             reference, customer_token, payment_source_token, created_at, expires_at)
         SELECT id, customer_id, gateway_id, name, metadata::jsonb, reference, customer_token,
             payment_source_token, created_at, expires_at
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
             AS t(id, customer_id, gateway_id, name, metadata, reference, customer_token,
                  payment_source_token, created_at, expires_at)",
    )
    .bind(column(|s| &s.id))
    .bind(&customers)
    .bind(column(|s| &s.gateway_id))
    .bind(column(|s| &s.name))
    .bind(&metadata)
    .bind(&references)
    .bind(column(|s| s.customer_token.expose()))
    .bind(column(|s| s.payment_source_token.expose()))
    .bind(&created_at)
    .bind(&expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records each customer's default (`None`: the customer has none).
async fn record_defaults(
    conn: &mut PgConnection,
    defaults: &[(&str, Option<&str>)],
) -> sqlx::Result<()> {
    if defaults.is_empty() {
        return Ok(());
    }
    let customers: Vec<&str> = defaults.iter().map(|(c, _)| *c).collect();
    let sources: Vec<Option<&str>> = defaults.iter().map(|(_, s)| *s).collect();
    sqlx::query(
        "WITH input AS (SELECT * FROM UNNEST($1::text[], $2::text[]) AS t(customer_id, source_id)),
         cleared AS (
             DELETE FROM wallet_defaults d USING input
             WHERE d.customer_id = input.customer_id AND input.source_id IS NULL)
         INSERT INTO wallet_defaults (customer_id, source_id)
         SELECT customer_id, source_id FROM input WHERE source_id IS NOT NULL
         ON CONFLICT (customer_id) DO UPDATE
             SET source_id = EXCLUDED.source_id, updated_at = now()",
    )
    .bind(&customers)
    .bind(&sources)
    .execute(conn)
    .await?;
    Ok(())
}
