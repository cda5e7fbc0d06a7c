//! Customer payment sources: the wallets a commit loads and writes back, and the
//! listings people read.
//!
//! The rules live in [`crate::domain::wallet`]; here a source is *available* when its
//! gateway exists and is enabled and the card has not expired, and the customer's
//! *default* is the chosen one (`wallet_defaults`) while it is available, else the most
//! recently saved available source — the same rules in SQL, for listings.
//!
//! Writers of one customer's wallet serialize on the customer's row, which each commit
//! locks before it loads the wallet ([`super::batch::open`]): a save at the cap, a
//! removal and a default change see each other's commits, never a snapshot from before
//! them.

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
         FROM UNNEST($1::text[]) AS c(id)
         JOIN customer_payment_sources s ON s.customer_id = c.id
         LEFT JOIN gateways g ON g.id = s.gateway_id
         LEFT JOIN wallet_defaults d ON d.customer_id = s.customer_id AND d.source_id = s.id",
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
