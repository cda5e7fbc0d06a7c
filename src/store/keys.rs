//! Where sealed values live, and the SQL of the keys: the fingerprint key, which data
//! keys the stored rows need, rows per key id (`keys status`) and re-sealing a batch
//! under the active key (`keys rotate`).

use crate::crypto::{DataKeys, FingerprintKey, Keyring, Row};
use anyhow::{Context, bail};
use sqlx::{PgPool, Postgres, Row as _, Transaction};
use std::collections::BTreeSet;

/// A table holding sealed values: its key id column, the unique text key each value
/// is bound to, and its sealed columns as (SQL column, name bound into the value).
#[derive(Debug, Clone, Copy)]
pub struct SealedTable {
    pub table: &'static str,
    pub key_column: &'static str,
    pub id_column: &'static str,
    /// The SQL type of `id_column`: ids travel as text and are cast back, so the
    /// lookup by id uses the table's index.
    id_type: &'static str,
    /// Sealed columns, any of which may be NULL in a row (nothing sealed there).
    pub columns: &'static [(&'static str, &'static str)],
    /// Indexed by key id: its key ids are read with a skip scan, not a full scan.
    indexed: bool,
}

impl SealedTable {
    /// Where the value of (logical) `column` of row `id` lives.
    pub fn row<'a>(&self, column: &'static str, id: &'a str) -> Row<'a> {
        Row {
            table: self.table,
            column,
            id,
        }
    }

    /// The names bound into its values (`customer_token, payment_source_token`).
    pub fn column_names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(_, name)| *name).collect()
    }
}

pub const SOURCES: SealedTable = SealedTable {
    table: "customer_payment_sources",
    key_column: "key_id",
    id_column: "id",
    id_type: "text",
    columns: &[
        ("customer_token_sealed", "customer_token"),
        ("payment_source_token_sealed", "payment_source_token"),
    ],
    indexed: true,
};
pub const ORDERS: SealedTable = SealedTable {
    table: "orders",
    key_column: "token_key_id",
    id_column: "id",
    id_type: "text",
    columns: &[("payment_source_token_sealed", "payment_source_token")],
    indexed: true,
};
pub const GATEWAYS: SealedTable = SealedTable {
    table: "gateways",
    key_column: "secret_key_id",
    id_column: "id",
    id_type: "text",
    columns: &[("secret_sealed", "secret")],
    indexed: false,
};
pub const OUTBOX: SealedTable = SealedTable {
    table: "outbox",
    key_column: "key_id",
    id_column: "event_id",
    id_type: "text",
    // A replayed dead letter's headers are sealed too; an event has none (NULL).
    columns: &[("body", "body"), ("headers", "headers")],
    indexed: false,
};
pub const DELAYED: SealedTable = SealedTable {
    table: "delayed_messages",
    key_column: "key_id",
    id_column: "id",
    id_type: "text",
    columns: &[("body", "body")],
    indexed: false,
};
/// Dead letters (docs/operations.md, the dead-letter store): their bodies and headers,
/// bound to the row id (known before the insert: the ingest draws ids from the
/// sequence first).
pub const DEAD_LETTERS: SealedTable = SealedTable {
    table: "dead_letters",
    key_column: "key_id",
    id_column: "id",
    id_type: "bigint",
    columns: &[("body", "body"), ("headers", "headers")],
    indexed: true,
};
pub const FINGERPRINT_KEY: SealedTable = SealedTable {
    table: "fingerprint_key",
    key_column: "key_id",
    id_column: "id",
    id_type: "text",
    columns: &[("wrapped", "fingerprint_key")],
    indexed: false,
};

/// Every table with sealed values: `keys status` counts them, `keys rotate` re-seals
/// them, `run` checks their key ids are held. A new one seals with
/// `Keyring::seal(value, TABLE.row(column, id))`, stores the key id beside the value
/// and is added here.
pub const SEALED: [SealedTable; 7] = [
    SOURCES,
    ORDERS,
    GATEWAYS,
    OUTBOX,
    DELAYED,
    FINGERPRINT_KEY,
    DEAD_LETTERS,
];

/// The keyring of `data`: loads the fingerprint key, or makes it (once, whoever comes
/// first) wrapped under the active key.
pub async fn keyring(pool: &PgPool, data: DataKeys) -> anyhow::Result<Keyring> {
    let at = FINGERPRINT_KEY.row("fingerprint_key", "fingerprint");
    let stored = || async {
        sqlx::query_as::<_, (String, Vec<u8>)>("SELECT key_id, wrapped FROM fingerprint_key")
            .fetch_optional(pool)
            .await
            .context("cannot read the fingerprint key")
    };
    let (key_id, wrapped) = match stored().await? {
        Some(found) => found,
        None => {
            let sealed = data.seal(FingerprintKey::generate().expose(), at);
            sqlx::query(
                "INSERT INTO fingerprint_key (key_id, wrapped) VALUES ($1, $2)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&*sealed.key_id)
            .bind(&sealed.bytes)
            .execute(pool)
            .await
            .context("cannot store the fingerprint key")?;
            stored().await?.context("the fingerprint key vanished")?
        }
    };
    let bytes = data
        .open(&key_id, &wrapped, at)
        .context("cannot unwrap the fingerprint key")?;
    let key = FingerprintKey::from_bytes(&bytes).context("the fingerprint key is not 32 bytes")?;
    Ok(Keyring::new(data, key))
}

/// The key ids `table`'s rows are sealed under.
pub async fn key_ids(pool: &PgPool, table: &SealedTable) -> sqlx::Result<BTreeSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(&key_ids_sql(table))
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().collect())
}

/// A query of the key ids of `table`: a skip scan over the key id index where there is
/// one (one index probe per distinct key id), else a scan.
fn key_ids_sql(table: &SealedTable) -> String {
    let SealedTable {
        table,
        key_column: key,
        indexed,
        ..
    } = table;
    if !indexed {
        return format!("SELECT DISTINCT {key} AS key_id FROM {table} WHERE {key} IS NOT NULL");
    }
    format!(
        "WITH RECURSIVE used(key_id) AS (
             (SELECT {key} FROM {table} WHERE {key} IS NOT NULL ORDER BY {key} LIMIT 1)
             UNION ALL
             SELECT (SELECT t.{key} FROM {table} t WHERE t.{key} > used.key_id
                     ORDER BY t.{key} LIMIT 1)
             FROM used WHERE used.key_id IS NOT NULL)
         SELECT key_id FROM used WHERE key_id IS NOT NULL"
    )
}

/// Every key id some stored row needs, in one statement.
pub async fn in_use(pool: &PgPool) -> sqlx::Result<BTreeSet<String>> {
    let parts: Vec<String> = SEALED
        .iter()
        .map(|table| format!("({})", key_ids_sql(table)))
        .collect();
    let ids: Vec<String> = sqlx::query_scalar(&parts.join(" UNION "))
        .fetch_all(pool)
        .await?;
    Ok(ids.into_iter().collect())
}

/// Fails with one line naming the key ids stored rows need and `keys` lacks: a worker
/// without them would fail on those rows one by one.
pub async fn check_held(pool: &PgPool, keys: &DataKeys) -> anyhow::Result<()> {
    let used = in_use(pool)
        .await
        .context("cannot read which keys the stored secrets need")?;
    let missing: Vec<&str> = used
        .iter()
        .map(String::as_str)
        .filter(|id| !keys.holds(id))
        .collect();
    if !missing.is_empty() {
        bail!(
            "stored secrets are sealed under key id(s) {} that WALLET_ENCRYPTION_KEYS does not \
             hold; give the worker those keys too (`wallet-worker keys status` shows which rows need them)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Rows of one table under one key id.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCount {
    pub table: &'static str,
    pub key_id: String,
    pub rows: i64,
}

/// Rows per key id of every sealed table (a full count: an operator's question). A
/// table a later migration creates (`delayed_messages`) is skipped while a database
/// mid-upgrade lacks it: `keys status` reads such databases too.
pub async fn counts(pool: &PgPool) -> sqlx::Result<Vec<KeyCount>> {
    let mut counts = Vec::new();
    for table in &SEALED {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table.table)
            .fetch_one(pool)
            .await?;
        if !exists {
            continue;
        }
        let sql = format!(
            "SELECT {key}, count(*) FROM {name} WHERE {key} IS NOT NULL GROUP BY 1 ORDER BY 1",
            key = table.key_column,
            name = table.table
        );
        let rows: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(pool).await?;
        counts.extend(rows.into_iter().map(|(key_id, rows)| KeyCount {
            table: table.table,
            key_id,
            rows,
        }));
    }
    Ok(counts)
}

/// Re-seals up to `limit` rows of `table` sealed under `old` with the active key, in
/// one transaction. Rows locked by a worker are skipped (the next batch takes them);
/// returns how many were re-sealed.
pub async fn rotate_batch(
    pool: &PgPool,
    keys: &Keyring,
    table: &SealedTable,
    old: &str,
    limit: i64,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = lock_sealed(&mut tx, table, old, limit).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut columns: Vec<Vec<Option<Vec<u8>>>> =
        vec![Vec::with_capacity(rows.len()); table.columns.len()];
    for (id, values) in &rows {
        for ((sealed, (_, name)), resealed) in values.iter().zip(table.columns).zip(&mut columns) {
            let Some(sealed) = sealed else {
                resealed.push(None);
                continue;
            };
            let plaintext = keys.open(old, sealed, table.row(name, id))?;
            resealed.push(Some(keys.seal(&plaintext, table.row(name, id)).bytes));
        }
        ids.push(id.as_str());
    }
    if !ids.is_empty() {
        let assignments: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (column, _))| format!("{column} = u.c{i}"))
            .collect();
        let unnest: Vec<String> = (0..table.columns.len())
            .map(|i| format!("${}::bytea[]", i + 4))
            .collect();
        let names: Vec<String> = (0..table.columns.len()).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "UPDATE {t} SET {key} = $1, {assignments}
             FROM UNNEST($3::text[], {unnest}) AS u(id, {names})
             WHERE {t}.{id} = u.id::{id_type} AND {t}.{key} = $2",
            t = table.table,
            key = table.key_column,
            id = table.id_column,
            id_type = table.id_type,
            assignments = assignments.join(", "),
            unnest = unnest.join(", "),
            names = names.join(", "),
        );
        let mut query = sqlx::query(&sql)
            .bind(keys.active_id())
            .bind(old)
            .bind(&ids);
        for column in &columns {
            query = query.bind(column);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(ids.len())
}

/// Locks up to `limit` rows of `table` sealed under `key_id`: their ids and sealed values.
/// In no order: the key id index finds them without sorting every row of the key.
async fn lock_sealed(
    tx: &mut Transaction<'_, Postgres>,
    table: &SealedTable,
    key_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<(String, Vec<Option<Vec<u8>>>)>> {
    let columns: Vec<&str> = table.columns.iter().map(|(column, _)| *column).collect();
    let sql = format!(
        "SELECT {id}::text AS id, {columns} FROM {t} WHERE {key} = $1
         LIMIT $2 FOR UPDATE SKIP LOCKED",
        id = table.id_column,
        columns = columns.join(", "),
        t = table.table,
        key = table.key_column,
    );
    let rows = sqlx::query(&sql)
        .bind(key_id)
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter()
        .map(|row| {
            let values = columns
                .iter()
                .map(|column| row.try_get::<Option<Vec<u8>>, _>(*column))
                .collect::<sqlx::Result<Vec<_>>>()?;
            Ok((row.try_get("id")?, values))
        })
        .collect()
}
