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

use super::keys::SOURCES;
use crate::crypto::{Keyring, OpenError};
use crate::domain::Secret;
use crate::domain::ids::{CustomerId, GatewayId, SourceId};
use crate::domain::wallet::{Fingerprint, Source as DomainSource, Wallet as DomainWallet};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;

/// A source's tokens as the store keeps them: sealed under one key, for the source's
/// row. Opened only to attach the source.
#[derive(Clone)]
pub struct SealedTokens {
    pub key_id: Arc<str>,
    pub customer_token: Vec<u8>,
    pub payment_source_token: Vec<u8>,
}

impl SealedTokens {
    /// Seals the tokens of source `id` under the active key.
    pub fn seal(
        keys: &Keyring,
        id: &str,
        customer_token: &Secret,
        payment_source_token: &Secret,
    ) -> Self {
        let customer = keys.seal_secret(customer_token, SOURCES.row("customer_token", id));
        let source = keys.seal_secret(
            payment_source_token,
            SOURCES.row("payment_source_token", id),
        );
        Self {
            key_id: customer.key_id,
            customer_token: customer.bytes,
            payment_source_token: source.bytes,
        }
    }

    /// The customer token and payment source token of source `id`.
    pub fn open(&self, keys: &Keyring, id: &str) -> Result<(Secret, Secret), OpenError> {
        let open =
            |sealed: &[u8], column| keys.open_secret(&self.key_id, sealed, SOURCES.row(column, id));
        Ok((
            open(&self.customer_token, "customer_token")?,
            open(&self.payment_source_token, "payment_source_token")?,
        ))
    }
}

/// The wallets of a commit batch, and the sealed tokens of their sources by source id.
pub struct LoadedWallets {
    pub wallets: HashMap<String, DomainWallet>,
    pub tokens: HashMap<String, SealedTokens>,
}

/// A stored source as listings show it: never a token.
#[derive(Debug, Clone, Serialize)]
pub struct SourceListing {
    pub id: SourceId,
    pub customer_id: CustomerId,
    pub gateway_id: GatewayId,
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
/// and the chosen default; a customer without sources has an empty wallet. Tokens stay
/// sealed.
pub async fn load_wallets(
    conn: &mut PgConnection,
    customers: &[&str],
) -> sqlx::Result<LoadedWallets> {
    let mut wallets: HashMap<String, DomainWallet> = customers
        .iter()
        .map(|c| {
            let wallet = DomainWallet {
                customer_id: CustomerId::stored((*c).to_owned()),
                sources: Vec::new(),
                chosen_default: None,
            };
            ((*c).to_owned(), wallet)
        })
        .collect();
    let mut tokens = HashMap::new();
    if customers.is_empty() {
        return Ok(LoadedWallets { wallets, tokens });
    }
    let rows = sqlx::query(
        "SELECT s.customer_id, s.id, s.gateway_id, s.name, s.metadata, s.reference,
                s.key_id, s.customer_token_sealed, s.payment_source_token_sealed,
                s.fingerprint, s.created_at, s.expires_at,
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
        let source = loaded_source(&row)?;
        let Some(wallet) = wallets.get_mut(&customer) else {
            continue;
        };
        tokens.insert(source.id.to_string(), sealed_tokens(&row)?);
        if row.try_get("chosen")? {
            wallet.chosen_default = Some(source.id.clone());
        }
        wallet.sources.push(source);
    }
    Ok(LoadedWallets { wallets, tokens })
}

/// A source of [`load_wallets`]' rows, without its tokens.
fn loaded_source(row: &PgRow) -> sqlx::Result<DomainSource> {
    Ok(DomainSource {
        id: row.try_get("id")?,
        gateway_id: row.try_get("gateway_id")?,
        name: row.try_get("name")?,
        metadata: row.try_get::<Json<Map<String, Value>>, _>("metadata")?.0,
        reference: row.try_get("reference")?,
        fingerprint: fingerprint(row.try_get("fingerprint")?)?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        gateway_enabled: row.try_get("gateway_enabled")?,
    })
}

/// The tokens of a source of [`load_wallets`]' rows, as stored.
fn sealed_tokens(row: &PgRow) -> sqlx::Result<SealedTokens> {
    Ok(SealedTokens {
        key_id: row.try_get::<String, _>("key_id")?.into(),
        customer_token: row.try_get("customer_token_sealed")?,
        payment_source_token: row.try_get("payment_source_token_sealed")?,
    })
}

fn fingerprint(bytes: Vec<u8>) -> sqlx::Result<Fingerprint> {
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| sqlx::Error::Decode("a stored fingerprint is not 32 bytes".into()))?;
    Ok(Fingerprint(bytes))
}

/// The customer's source `id` (`None` for another customer's).
pub async fn find_owned(
    pool: &PgPool,
    id: &str,
    customer_id: &str,
) -> sqlx::Result<Option<DomainSource>> {
    let mut conn = pool.acquire().await?;
    let loaded = load_wallets(&mut conn, &[customer_id]).await?;
    Ok(loaded
        .wallets
        .into_values()
        .flat_map(|wallet| wallet.sources)
        .find(|source| source.id == id))
}
