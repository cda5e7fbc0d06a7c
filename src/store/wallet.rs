//! Customer payment sources: the wallet.

use crate::domain::Secret;
use crate::domain::events::SourceSummary;
use crate::domain::ids;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Row};

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
}

/// Stores `source` unless the customer's wallet already holds the same gateway token;
/// returns the source and whether it was created. The unique key makes this safe when
/// workers race on the same card: the loser waits for the winner's commit, then reuses.
pub async fn save(
    conn: &mut PgConnection,
    source: &NewSource<'_>,
) -> sqlx::Result<(SourceSummary, bool)> {
    // One round trip in the common cases: inserted, or found already stored.
    let row = sqlx::query(
        "WITH inserted AS (
             INSERT INTO customer_payment_sources (id, customer_id, gateway_id, name,
                 metadata, reference, customer_token, payment_source_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (customer_id, gateway_id, payment_source_token) DO NOTHING
             RETURNING id, gateway_id, name, metadata)
         SELECT id, gateway_id, name, metadata, true AS created FROM inserted
         UNION ALL
         SELECT id, gateway_id, name, metadata, false FROM customer_payment_sources
         WHERE customer_id = $2 AND gateway_id = $3 AND payment_source_token = $8
           AND NOT EXISTS (SELECT 1 FROM inserted)",
    )
    .bind(ids::customer_payment_source_id())
    .bind(source.customer_id)
    .bind(source.gateway_id)
    .bind(source.name)
    .bind(Json(source.metadata))
    .bind(source.reference)
    .bind(source.customer_token.expose())
    .bind(source.payment_source_token.expose())
    .fetch_optional(&mut *conn)
    .await?;
    let row = match row {
        Some(row) => row,
        // Another transaction stored the card after this statement's snapshot was
        // taken: the conflict waited for its commit; a fresh statement sees the row.
        None => {
            sqlx::query(
                "SELECT id, gateway_id, name, metadata, false AS created
             FROM customer_payment_sources
             WHERE customer_id = $1 AND gateway_id = $2 AND payment_source_token = $3",
            )
            .bind(source.customer_id)
            .bind(source.gateway_id)
            .bind(source.payment_source_token.expose())
            .fetch_one(conn)
            .await?
        }
    };
    let metadata: Json<Map<String, Value>> = row.try_get("metadata")?;
    let summary = SourceSummary {
        id: row.try_get("id")?,
        gateway_id: row.try_get("gateway_id")?,
        name: row.try_get("name")?,
        metadata: metadata.0,
    };
    Ok((summary, row.try_get("created")?))
}

/// The source `id` if it belongs to `customer_id`; `None` for an unknown id and for
/// another customer's source alike, so ownership never reveals existence.
pub async fn find_owned(
    pool: &PgPool,
    id: &str,
    customer_id: &str,
) -> sqlx::Result<Option<StoredSource>> {
    let row = sqlx::query(
        "SELECT id, customer_id, gateway_id, metadata, customer_token, payment_source_token
         FROM customer_payment_sources WHERE id = $1 AND customer_id = $2",
    )
    .bind(id)
    .bind(customer_id)
    .fetch_optional(pool)
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
    }))
}

/// The customer's available payment sources, oldest first.
pub async fn list(pool: &PgPool, customer_id: &str) -> sqlx::Result<Vec<SourceListing>> {
    let rows = sqlx::query(
        "SELECT id, customer_id, gateway_id, name, metadata, reference, created_at
         FROM customer_payment_sources WHERE customer_id = $1 ORDER BY created_at, id",
    )
    .bind(customer_id)
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
            })
        })
        .collect()
}
