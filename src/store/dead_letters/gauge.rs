//! `wallet_dead_letters{kind}`: the dead letters waiting in the store by error kind
//! (docs/operations.md, observability), read from the failure groups when `/metrics`
//! is scraped: one small query per scrape, none while nobody looks. Every replica
//! reports the same store; alerts take the max.

use crate::error_chain::ErrorChain;
use crate::metrics as m;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a scrape waits for the count before it shows the last one.
const WAIT: Duration = Duration::from_secs(1);

/// Sets the gauge from the store; a database that does not answer in time leaves the
/// last values (and `wallet_database_up` says why).
pub async fn refresh(pool: &PgPool) {
    match tokio::time::timeout(WAIT, by_kind(pool)).await {
        Ok(Ok(counts)) => {
            for (kind, n) in counts {
                metrics::gauge!(m::DEAD_LETTERS_STORED, "kind" => kind).set(n as f64);
            }
        }
        Ok(Err(err)) => {
            tracing::warn!(
                error = %ErrorChain(&err),
                "cannot count the stored dead letters"
            );
        }
        Err(_) => tracing::warn!("counting the stored dead letters took too long"),
    }
}

/// Dead letters not replayed yet, by label-safe kind ([`m::dead_letter_kinds`]; any
/// other error kind counts as `other`), every kind present.
pub async fn by_kind(pool: &PgPool) -> sqlx::Result<BTreeMap<&'static str, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT error, sum(count)::bigint FROM dead_letter_groups GROUP BY error")
            .fetch_all(pool)
            .await?;
    let mut counts: BTreeMap<&'static str, i64> =
        m::dead_letter_kinds().map(|kind| (kind, 0)).collect();
    for (error, n) in rows {
        *counts.entry(m::dead_letter_kind(&error)).or_default() += n;
    }
    Ok(counts)
}
