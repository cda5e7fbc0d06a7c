//! Sealing the secrets an earlier version stored in plaintext (docs/operations.md,
//! upgrading to sealed secrets). The only code that knows the plaintext columns; it
//! runs between migration 0008, which adds the sealed columns, and 0009, which drops
//! the plaintext ones.
//!
//! Each batch is one transaction that locks rows in key order, seals them and clears
//! their plaintext: a process killed mid-way loses nothing (a batch commits whole or
//! not at all), and the next run goes on with the rows still in plaintext. Several
//! processes may seal side by side: a row another one is sealing is waited for, then
//! skipped (it no longer matches).

use super::keys::{GATEWAYS, ORDERS, OUTBOX, SOURCES};
use crate::crypto::Keyring;
use crate::domain::Secret;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

/// Rows per transaction.
const BATCH: i64 = 500;

/// Whether the plaintext columns are still there (migration 0009 not yet applied).
pub async fn columns_exist(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = current_schema() AND table_name = 'gateways'
                          AND column_name = 'secret')",
    )
    .fetch_one(pool)
    .await
}

/// Rows still in plaintext, per table (call only while [`columns_exist`]).
pub async fn remaining_by_table(pool: &PgPool) -> sqlx::Result<Vec<(&'static str, i64)>> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM customer_payment_sources WHERE key_id IS NULL) AS sources,
                (SELECT count(*) FROM orders
                 WHERE payment_source_token IS NOT NULL AND token_key_id IS NULL) AS orders,
                (SELECT count(*) FROM gateways WHERE secret_key_id IS NULL) AS gateways,
                (SELECT count(*) FROM outbox WHERE key_id IS NULL) AS outbox",
    )
    .fetch_one(pool)
    .await?;
    Ok(vec![
        (SOURCES.table, row.try_get("sources")?),
        (ORDERS.table, row.try_get("orders")?),
        (GATEWAYS.table, row.try_get("gateways")?),
        (OUTBOX.table, row.try_get("outbox")?),
    ])
}

/// Rows still in plaintext (call only while [`columns_exist`]).
pub async fn remaining(pool: &PgPool) -> sqlx::Result<i64> {
    Ok(remaining_by_table(pool).await?.iter().map(|(_, n)| n).sum())
}

/// Seals every plaintext row under the active key; returns how many.
pub async fn seal_all(pool: &PgPool, keys: &Keyring) -> sqlx::Result<u64> {
    let mut sealed = 0;
    for step in [Step::Sources, Step::Orders, Step::Gateways, Step::Outbox] {
        let mut after = String::new();
        loop {
            let (count, last) = step.batch(pool, keys, &after).await?;
            sealed += count;
            crate::faults::crash_for("plaintext.sealed", step.table());
            match last {
                Some(last) => after = last,
                None => break,
            }
        }
    }
    Ok(sealed)
}

/// One batch's sealed columns, row by row.
#[derive(Default)]
struct Sealed {
    ids: Vec<String>,
    first: Vec<Vec<u8>>,
    second: Vec<Vec<u8>>,
    fingerprints: Vec<Vec<u8>>,
}

#[derive(Clone, Copy)]
enum Step {
    Sources,
    Orders,
    Gateways,
    Outbox,
}

impl Step {
    /// Seals the next batch of plaintext rows whose key sorts after `after`; returns
    /// how many and the last key (`None` at the end of the table).
    async fn batch(
        self,
        pool: &PgPool,
        keys: &Keyring,
        after: &str,
    ) -> sqlx::Result<(u64, Option<String>)> {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query(self.select())
            .bind(after)
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
        let mut sealed = Sealed::default();
        for row in &rows {
            self.seal(keys, row, &mut sealed)?;
        }
        let Some(last) = sealed.ids.last().cloned() else {
            tx.rollback().await?;
            return Ok((0, None));
        };
        let mut update = sqlx::query(self.update())
            .bind(keys.active_id())
            .bind(&sealed.ids)
            .bind(&sealed.first);
        if let Self::Sources = self {
            update = update.bind(&sealed.second).bind(&sealed.fingerprints);
        }
        update.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok((sealed.ids.len() as u64, Some(last)))
    }

    /// Seals one row's plaintext into `out`.
    fn seal(self, keys: &Keyring, row: &PgRow, out: &mut Sealed) -> sqlx::Result<()> {
        let id: String = row.try_get("id")?;
        let secret = |column: &str| -> sqlx::Result<Secret> {
            Ok(Secret::new(row.try_get::<String, _>(column)?))
        };
        match self {
            Self::Sources => {
                let token = secret("payment_source_token")?;
                let gateway: String = row.try_get("gateway_id")?;
                out.fingerprints
                    .push(keys.fingerprint(&gateway, &token).0.to_vec());
                let at = SOURCES.row("customer_token", &id);
                out.first
                    .push(keys.seal_secret(&secret("customer_token")?, at).bytes);
                let at = SOURCES.row("payment_source_token", &id);
                out.second.push(keys.seal_secret(&token, at).bytes);
            }
            Self::Orders => {
                let at = ORDERS.row("payment_source_token", &id);
                out.first
                    .push(keys.seal_secret(&secret("payment_source_token")?, at).bytes);
            }
            Self::Gateways => {
                let at = GATEWAYS.row("secret", &id);
                out.first
                    .push(keys.seal_secret(&secret("secret")?, at).bytes);
            }
            Self::Outbox => {
                let body: Vec<u8> = row.try_get("body")?;
                out.first
                    .push(keys.seal(&body, OUTBOX.row("body", &id)).bytes);
            }
        }
        out.ids.push(id);
        Ok(())
    }

    fn table(self) -> &'static str {
        match self {
            Self::Sources => SOURCES.table,
            Self::Orders => ORDERS.table,
            Self::Gateways => GATEWAYS.table,
            Self::Outbox => OUTBOX.table,
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Sources => {
                "SELECT id, gateway_id, customer_token, payment_source_token
                 FROM customer_payment_sources WHERE id > $1 AND key_id IS NULL
                 ORDER BY id LIMIT $2 FOR UPDATE"
            }
            Self::Orders => {
                "SELECT id, payment_source_token FROM orders
                 WHERE id > $1 AND payment_source_token IS NOT NULL AND token_key_id IS NULL
                 ORDER BY id LIMIT $2 FOR UPDATE"
            }
            Self::Gateways => {
                "SELECT id, secret FROM gateways WHERE id > $1 AND secret_key_id IS NULL
                 ORDER BY id LIMIT $2 FOR UPDATE"
            }
            Self::Outbox => {
                "SELECT event_id AS id, body FROM outbox WHERE event_id > $1 AND key_id IS NULL
                 ORDER BY event_id LIMIT $2 FOR UPDATE"
            }
        }
    }

    /// `$1` the key id, `$2` the ids, `$3` the sealed values (sources: `$4` the sealed
    /// payment source tokens, `$5` the fingerprints); each clears the plaintext it sealed.
    fn update(self) -> &'static str {
        match self {
            Self::Sources => {
                "UPDATE customer_payment_sources s SET key_id = $1, customer_token_sealed = u.c,
                     payment_source_token_sealed = u.p, fingerprint = u.f,
                     customer_token = NULL, payment_source_token = NULL
                 FROM UNNEST($2::text[], $3::bytea[], $4::bytea[], $5::bytea[]) AS u(id, c, p, f)
                 WHERE s.id = u.id"
            }
            Self::Orders => {
                "UPDATE orders o SET token_key_id = $1, payment_source_token_sealed = u.t,
                     payment_source_token = NULL
                 FROM UNNEST($2::text[], $3::bytea[]) AS u(id, t)
                 WHERE o.id = u.id"
            }
            Self::Gateways => {
                "UPDATE gateways g SET secret_key_id = $1, secret_sealed = u.s, secret = NULL
                 FROM UNNEST($2::text[], $3::bytea[]) AS u(id, s)
                 WHERE g.id = u.id"
            }
            Self::Outbox => {
                "UPDATE outbox o SET key_id = $1, body = u.b
                 FROM UNNEST($2::text[], $3::bytea[]) AS u(id, b)
                 WHERE o.event_id = u.id"
            }
        }
    }
}
