//! External gateways and their shared circuit-breaker state.

use super::keys::GATEWAYS;
use crate::crypto::Keyring;
use crate::domain::Secret;
use crate::domain::circuit::CircuitState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Row};
use std::time::Duration;

/// A gateway as workers use it. Read per message, so `gateway set` takes effect at once.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub id: String,
    pub token_url: String,
    pub secret: Secret,
    pub enabled: bool,
    pub consecutive_failures: i32,
    pub circuit_open_until: Option<DateTime<Utc>>,
}

impl Gateway {
    /// Time left before the circuit lets calls through again, if it is open.
    pub fn circuit_open_for(&self, now: DateTime<Utc>) -> Option<Duration> {
        self.circuit_open_until
            .and_then(|until| (until - now).to_std().ok())
            .filter(|left| !left.is_zero())
    }
}

/// A gateway as `gateway list` shows it: no secret.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayListing {
    pub id: String,
    pub token_url: String,
    pub enabled: bool,
    pub circuit: CircuitState,
    pub consecutive_failures: i32,
    pub circuit_open_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

fn from_row(keys: &Keyring, row: &sqlx::postgres::PgRow) -> sqlx::Result<Gateway> {
    let id: String = row.try_get("id")?;
    let key_id: String = row.try_get("secret_key_id")?;
    let sealed: Vec<u8> = row.try_get("secret_sealed")?;
    let secret = keys
        .open_secret(&key_id, &sealed, GATEWAYS.row("secret", &id))
        .map_err(|err| sqlx::Error::Decode(err.into()))?;
    Ok(Gateway {
        id,
        token_url: row.try_get("token_url")?,
        secret,
        enabled: row.try_get("enabled")?,
        consecutive_failures: row.try_get("consecutive_failures")?,
        circuit_open_until: row.try_get("circuit_open_until")?,
    })
}

/// The gateway `id`, its secret opened. A secret that does not open is a decode error
/// naming the gateway and the key (never a gateway with a wrong secret).
pub async fn find(pool: &PgPool, keys: &Keyring, id: &str) -> sqlx::Result<Option<Gateway>> {
    sqlx::query(
        "SELECT id, token_url, secret_key_id, secret_sealed, enabled, consecutive_failures,
                circuit_open_until
         FROM gateways WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    .map(|row| from_row(keys, &row))
    .transpose()
}

/// Creates or replaces the gateway `id`, its secret sealed under the active key.
pub async fn upsert(
    pool: &PgPool,
    keys: &Keyring,
    id: &str,
    token_url: &str,
    secret: &Secret,
    enabled: bool,
) -> sqlx::Result<()> {
    let sealed = keys.seal_secret(secret, GATEWAYS.row("secret", id));
    sqlx::query(
        "INSERT INTO gateways (id, token_url, secret_key_id, secret_sealed, enabled)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET token_url = EXCLUDED.token_url,
             secret_key_id = EXCLUDED.secret_key_id, secret_sealed = EXCLUDED.secret_sealed,
             enabled = EXCLUDED.enabled, updated_at = now()",
    )
    .bind(id)
    .bind(token_url)
    .bind(&*sealed.key_id)
    .bind(&sealed.bytes)
    .bind(enabled)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<GatewayListing>> {
    let rows = sqlx::query(
        "SELECT id, token_url, enabled, consecutive_failures, circuit_open_until, updated_at
         FROM gateways ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    rows.iter()
        .map(|row| {
            let open_until: Option<DateTime<Utc>> = row.try_get("circuit_open_until")?;
            let circuit = CircuitState::at(open_until, now);
            Ok(GatewayListing {
                id: row.try_get("id")?,
                token_url: row.try_get("token_url")?,
                enabled: row.try_get("enabled")?,
                circuit,
                consecutive_failures: row.try_get("consecutive_failures")?,
                circuit_open_until: open_until,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Removes a gateway; false when there was none.
pub async fn remove(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM gateways WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes the circuit; false when the gateway does not exist.
pub async fn reset_circuit(pool: &PgPool, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE gateways SET consecutive_failures = 0, circuit_open_until = NULL,
             updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts one more transient failure; opens the circuit for `cool_down` once
/// `threshold` failures have happened in a row (shared by all worker processes).
pub async fn record_failure(
    pool: &PgPool,
    id: &str,
    threshold: i32,
    cool_down: Duration,
) -> sqlx::Result<bool> {
    let opened: Option<bool> = sqlx::query_scalar(
        "UPDATE gateways SET consecutive_failures = consecutive_failures + 1,
             circuit_open_until = CASE WHEN consecutive_failures + 1 >= $2
                 THEN now() + make_interval(secs => $3) ELSE circuit_open_until END
         WHERE id = $1 RETURNING circuit_open_until IS NOT NULL AND circuit_open_until > now()",
    )
    .bind(id)
    .bind(threshold)
    .bind(cool_down.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(opened.unwrap_or(false))
}

/// A call went through: the gateway is healthy again.
pub async fn record_success(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE gateways SET consecutive_failures = 0, circuit_open_until = NULL
         WHERE id = $1 AND (consecutive_failures > 0 OR circuit_open_until IS NOT NULL)",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
