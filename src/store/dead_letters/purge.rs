//! Purge (docs/operations.md, purge): dead letters deleted in batches, each batch with
//! its groups and its audit count in one transaction, so a killed purge leaves the
//! store, the groups and the log consistent.

use super::groups;
use super::{Cursor, Filter};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};

/// Deletes up to `limit` dead letters matching `filter` after `after` (rows another
/// replay or purge holds are skipped). Returns how many, and where the next batch
/// starts (`None`: nothing was left).
pub async fn batch(
    pool: &PgPool,
    audit_id: i64,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<(u64, Option<Cursor>)> {
    crate::store::in_transaction(pool, async |conn| {
        delete(conn, audit_id, filter, after, limit).await
    })
    .await
}

async fn delete(
    conn: &mut PgConnection,
    audit_id: i64,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<(u64, Option<Cursor>)> {
    let mut sql = QueryBuilder::<Postgres>::new(
        "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters",
    );
    filter.push_where(&mut sql, after);
    sql.push(" ORDER BY dead_lettered_at, id LIMIT ")
        .push_bind(limit)
        .push(" FOR UPDATE SKIP LOCKED) RETURNING id, group_key, dead_lettered_at");
    let gone: Vec<(i64, String, DateTime<Utc>)> =
        sql.build_query_as().fetch_all(&mut *conn).await?;
    let next = gone
        .iter()
        .map(|(id, _, at)| Cursor { at: *at, id: *id })
        .max_by_key(|c| (c.at, c.id));
    groups::remove(
        &mut *conn,
        &groups::tally(gone.iter().map(|(_, g, _)| g.as_str())),
    )
    .await?;
    crate::store::audit::counted(&mut *conn, audit_id, gone.len() as i64).await?;
    Ok((gone.len() as u64, next))
}
