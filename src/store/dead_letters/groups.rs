//! Keeping `dead_letter_groups` in step with the dead letters not replayed yet, inside
//! the transaction that changes them. Group rows are locked in key order, so two
//! transactions touching the same groups wait for each other instead of deadlocking.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// Dead letters added to one group by an ingest batch.
#[derive(Debug, Clone)]
pub struct Added {
    pub error: String,
    pub routing_key: Option<String>,
    pub label: String,
    pub count: i64,
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl Added {
    pub fn add(&mut self, at: DateTime<Utc>) {
        self.count += 1;
        self.first = self.first.min(at);
        self.last = self.last.max(at);
    }
}

/// Adds to the groups (created when new); `added` is keyed (so ordered) by group key.
pub async fn add(conn: &mut PgConnection, added: &BTreeMap<String, Added>) -> sqlx::Result<()> {
    if added.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = added.keys().map(String::as_str).collect();
    let errors: Vec<&str> = added.values().map(|a| a.error.as_str()).collect();
    let types: Vec<Option<&str>> = added.values().map(|a| a.routing_key.as_deref()).collect();
    let labels: Vec<&str> = added.values().map(|a| a.label.as_str()).collect();
    let counts: Vec<i64> = added.values().map(|a| a.count).collect();
    let firsts: Vec<DateTime<Utc>> = added.values().map(|a| a.first).collect();
    let lasts: Vec<DateTime<Utc>> = added.values().map(|a| a.last).collect();
    sqlx::query(
        "INSERT INTO dead_letter_groups AS g
             (group_key, error, routing_key, label, count, first_seen, last_seen)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::timestamptz[], $7::timestamptz[])
         ON CONFLICT (group_key) DO UPDATE
         SET count = g.count + EXCLUDED.count,
             first_seen = least(g.first_seen, EXCLUDED.first_seen),
             last_seen = greatest(g.last_seen, EXCLUDED.last_seen)",
    )
    .bind(&keys)
    .bind(&errors)
    .bind(&types)
    .bind(&labels)
    .bind(&counts)
    .bind(&firsts)
    .bind(&lasts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes `removed[key]` dead letters (replayed, purged or pruned, all in this
/// transaction already) off each group: first and last seen are read again from the
/// group's index, and a group left empty is deleted.
///
/// No dead letter waiting in a group is older than its first seen or newer than its
/// last seen, so each search starts there: it steps over the entries this batch just
/// removed, not over every entry removed since the index was last vacuumed (which would
/// make a long replay or purge quadratic).
pub async fn remove(conn: &mut PgConnection, removed: &BTreeMap<String, i64>) -> sqlx::Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = removed.keys().map(String::as_str).collect();
    let counts: Vec<i64> = removed.values().copied().collect();
    sqlx::query(
        "SELECT 1 FROM dead_letter_groups WHERE group_key = ANY($1)
         ORDER BY group_key FOR UPDATE",
    )
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "WITH gone AS (SELECT * FROM UNNEST($1::text[], $2::bigint[]) AS t(group_key, n))
         UPDATE dead_letter_groups g
         SET count = greatest(g.count - gone.n, 0),
             first_seen = coalesce((SELECT min(dead_lettered_at) FROM dead_letters d
                                    WHERE d.group_key = g.group_key AND d.replayed_at IS NULL
                                      AND d.dead_lettered_at >= g.first_seen),
                                   g.first_seen),
             last_seen = coalesce((SELECT max(dead_lettered_at) FROM dead_letters d
                                   WHERE d.group_key = g.group_key AND d.replayed_at IS NULL
                                     AND d.dead_lettered_at <= g.last_seen),
                                  g.last_seen)
         FROM gone WHERE g.group_key = gone.group_key",
    )
    .bind(&keys)
    .bind(&counts)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM dead_letter_groups WHERE group_key = ANY($1) AND count = 0")
        .bind(&keys)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts by group key, for [`remove`].
pub fn tally<'a>(keys: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key.to_owned()).or_insert(0) += 1;
    }
    counts
}
