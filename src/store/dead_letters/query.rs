//! Reading the store: a page of dead letters in (dead_lettered_at, id) order, how many
//! more match, one dead letter, and the summary. Each is one indexed query (or two in
//! one snapshot); memory holds at most a page.

use super::{COLUMNS, Cursor, DeadLetter, Filter, Stored, open_all, time_text};
use crate::crypto::DataKeys;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use std::collections::BTreeMap;

/// Rows one page query reads at most; longer listings are several pages.
pub const MAX_PAGE: i64 = 1000;
/// Beyond this many, "more match" is a lower bound: counting further would read rows
/// nobody asked for.
pub const COUNT_CAP: i64 = 10_000;
/// Dead letters `show` returns at most for one message id (one per life).
pub const SHOW_AT_MOST: i64 = 20;

/// Up to `limit` (at most [`MAX_PAGE`]) dead letters matching `filter`, after `after`.
pub async fn page(
    conn: &mut PgConnection,
    keys: &DataKeys,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<DeadLetter>> {
    let mut sql = QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM dead_letters"));
    filter.push_where(&mut sql, after);
    sql.push(" ORDER BY dead_lettered_at, id LIMIT ")
        .push_bind(limit.clamp(1, MAX_PAGE));
    open_all(sql.build_query_as().fetch_all(conn).await?, keys)
}

/// How many dead letters match `filter` after `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Exactly(u64),
    /// More than [`COUNT_CAP`].
    AtLeast(u64),
}

impl Count {
    pub fn is_zero(self) -> bool {
        self == Self::Exactly(0)
    }
}

/// Counts the matches after `after`: from the groups when they can tell (no cursor,
/// and a filter of error kind, type or group only), else by reading at most
/// [`COUNT_CAP`] index entries.
pub async fn count(
    conn: &mut PgConnection,
    filter: &Filter,
    after: Option<&Cursor>,
) -> sqlx::Result<Count> {
    if after.is_none() && filter.counted_by_groups() {
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT coalesce(sum(count), 0)::bigint FROM dead_letter_groups WHERE true",
        );
        for (column, value) in [
            ("error", &filter.error),
            ("routing_key", &filter.kind),
            ("group_key", &filter.group),
        ] {
            if let Some(value) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        let n: i64 = sql.build_query_scalar().fetch_one(conn).await?;
        return Ok(Count::Exactly(u64::try_from(n).unwrap_or(0)));
    }
    let mut sql = QueryBuilder::<Postgres>::new("SELECT count(*) FROM (SELECT 1 FROM dead_letters");
    filter.push_where(&mut sql, after);
    sql.push(" LIMIT ")
        .push_bind(COUNT_CAP + 1)
        .push(") AS matching");
    let n: i64 = sql.build_query_scalar().fetch_one(conn).await?;
    let n = u64::try_from(n).unwrap_or(0);
    Ok(if n > COUNT_CAP as u64 {
        Count::AtLeast(COUNT_CAP as u64)
    } else {
        Count::Exactly(n)
    })
}

/// How many match past a listing whose last row is `last`: when the listing started at
/// the beginning (`shown_from_start` rows) and the groups count the filter, exactly
/// their total less what was shown; else [`count`] after `last`.
pub async fn rest(
    pool: &PgPool,
    filter: &Filter,
    last: Option<&Cursor>,
    shown_from_start: Option<u64>,
) -> sqlx::Result<Count> {
    let Some(last) = last else {
        return Ok(Count::Exactly(0));
    };
    let mut conn = pool.acquire().await?;
    match shown_from_start {
        Some(shown) if filter.counted_by_groups() => {
            Ok(match count(&mut conn, filter, None).await? {
                Count::Exactly(total) => Count::Exactly(total.saturating_sub(shown)),
                at_least => at_least,
            })
        }
        _ => count(&mut conn, filter, Some(last)).await,
    }
}

/// The dead letters whose message id is `key`, or the one whose row id it is, oldest
/// first (replayed ones included), at most [`SHOW_AT_MOST`].
pub async fn show(pool: &PgPool, keys: &DataKeys, key: &str) -> sqlx::Result<Vec<DeadLetter>> {
    let row_id: Option<i64> = key.parse().ok();
    let rows: Vec<Stored> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE message_id = $1 OR id = $2
         ORDER BY id LIMIT $3"
    ))
    .bind(key)
    .bind(row_id)
    .bind(SHOW_AT_MOST)
    .fetch_all(pool)
    .await?;
    open_all(rows, keys)
}

/// Dead letters not replayed yet whose message id starts with one of `prefixes`, by
/// error kind (the demo counts its own run's this way).
pub async fn by_error_of_ids(
    pool: &PgPool,
    prefixes: &[String],
) -> sqlx::Result<BTreeMap<String, u64>> {
    let patterns: Vec<String> = prefixes
        .iter()
        .map(|p| {
            format!(
                "{}%",
                p.replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_")
            )
        })
        .collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT error, count(*) FROM dead_letters
         WHERE replayed_at IS NULL AND message_id LIKE ANY($1) GROUP BY error",
    )
    .bind(&patterns)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(error, n)| (error, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// Distinct keys one count of the summary keeps; the rest are added up under
/// [`OTHER`], so made-up types cannot grow it without bound.
pub const MAX_KEYS: usize = 1000;
/// The key of what is past [`MAX_KEYS`].
pub const OTHER: &str = "(other)";
/// The type of dead letters whose type nobody knows.
pub const UNKNOWN: &str = "unknown";

/// `dlq summary`: counts of the dead letters not replayed yet, by error kind, type and
/// failure group, with the oldest and newest dead-letter times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub total: u64,
    pub by_error: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    pub oldest: Option<String>,
    pub newest: Option<String>,
    /// Largest first, at most [`MAX_KEYS`].
    pub by_group: Vec<GroupSummary>,
}

/// One failure group in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    pub group: String,
    pub error: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub label: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
}

struct Grouped {
    /// Bits of GROUPING(group_key, error, routing_key): which columns are rolled up.
    grouping: i32,
    group_key: Option<String>,
    error: Option<String>,
    routing_key: Option<String>,
    label: Option<String>,
    count: i64,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
}

crate::store::from_row!(Grouped {
    grouping,
    group_key,
    error,
    routing_key,
    label,
    count,
    first_seen,
    last_seen
});

/// Reads the summary from the failure groups in one query (its rows: one per group,
/// error kind and type, and the total), streamed, largest groups first.
pub async fn summary(pool: &PgPool) -> sqlx::Result<Summary> {
    let mut rows = sqlx::query_as::<_, Grouped>(
        "SELECT GROUPING(group_key, error, routing_key) AS grouping, group_key, error,
                routing_key, min(label) AS label, sum(count)::bigint AS count,
                min(first_seen) AS first_seen, max(last_seen) AS last_seen
         FROM dead_letter_groups
         GROUP BY GROUPING SETS ((group_key, error, routing_key), (error), (routing_key), ())
         ORDER BY count DESC, group_key, error, routing_key",
    )
    .fetch(pool);
    let mut summary = Summary::default();
    while let Some(row) = rows.try_next().await? {
        summary.add(row);
    }
    Ok(summary)
}

impl Summary {
    fn add(&mut self, row: Grouped) {
        let count = u64::try_from(row.count).unwrap_or(0);
        match row.grouping {
            0 if self.by_group.len() < MAX_KEYS => self.by_group.push(GroupSummary {
                group: row.group_key.unwrap_or_default(),
                error: row.error.unwrap_or_default(),
                kind: row.routing_key,
                label: row.label.unwrap_or_default(),
                count,
                first_seen: row.first_seen.map(time_text).unwrap_or_default(),
                last_seen: row.last_seen.map(time_text).unwrap_or_default(),
            }),
            0b101 => bump(&mut self.by_error, row.error, count),
            0b110 => bump(&mut self.by_type, row.routing_key, count),
            0b111 => {
                self.total = count;
                self.oldest = row.first_seen.map(time_text);
                self.newest = row.last_seen.map(time_text);
            }
            _ => {}
        }
    }
}

fn bump(counts: &mut BTreeMap<String, u64>, key: Option<String>, n: u64) {
    let key = key.unwrap_or_else(|| UNKNOWN.to_owned());
    if counts.len() < MAX_KEYS || counts.contains_key(&key) {
        *counts.entry(key).or_default() += n;
    } else {
        *counts.entry(OTHER.to_owned()).or_default() += n;
    }
}
