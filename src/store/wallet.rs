//! Customer payment sources: the wallets a commit loads and writes back, and the
//! listings people read.
//!
//! The rules live in [`crate::domain::wallet`]; here a source is *available* when its
//! gateway exists and is enabled and the card has not expired, and the customer's
//! *default* is the chosen one (`wallet_defaults`) while it is available, else the most
//! recently saved available source — the same rules in SQL, for listings.
//!
//! Writers of one customer's wallet serialize on the customer's row
//! ([`lock_customers`]): a save at the cap, a removal and a default change see each
//! other's commits, never a snapshot from before them.

use crate::domain::Secret;
use crate::domain::wallet::{Source as DomainSource, Wallet as DomainWallet};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;

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

/// The condition "available at `$now`" on a source `s` joined to its gateway `g`.
const AVAILABLE: &str = "g.enabled IS TRUE AND (s.expires_at IS NULL OR s.expires_at > $2)";

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

/// Records `customers` (id, and the email a placed order gave, if any) and locks their
/// rows until the transaction ends, all in one statement in id order: concurrent
/// commits take customer locks in one order, whether the rows are new or not, so they
/// cannot deadlock on them. A customer only ever named by a wallet command is recorded
/// too (an id, no email).
pub async fn lock_customers(
    conn: &mut PgConnection,
    customers: &[(&str, Option<&str>)],
) -> sqlx::Result<()> {
    if customers.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = customers.iter().map(|(id, _)| *id).collect();
    let emails: Vec<Option<&str>> = customers.iter().map(|(_, email)| *email).collect();
    sqlx::query(
        "INSERT INTO customers (id, email)
         SELECT id, email FROM UNNEST($1::text[], $2::text[]) AS t(id, email) ORDER BY id
         ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, customers.email)",
    )
    .bind(&ids)
    .bind(&emails)
    .execute(conn)
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

/// The customer's source `id`, tokens included (`None` for another customer's).
pub async fn find_owned(
    pool: &PgPool,
    id: &str,
    customer_id: &str,
) -> sqlx::Result<Option<DomainSource>> {
    let mut conn = pool.acquire().await?;
    let wallets = load_wallets(&mut conn, &[customer_id]).await?;
    Ok(wallets
        .into_values()
        .flat_map(|wallet| wallet.sources)
        .find(|source| source.id == id))
}
