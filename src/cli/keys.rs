//! `keys status|rotate` (docs/operations.md, key management): which rows each data key
//! seals, and re-sealing everything under the active key while workers run.

use crate::config::KeysCmd;
use crate::crypto::{DataKeys, Keyring};
use crate::store::audit::{self, Via};
use crate::store::keys::{self, KeyCount, SEALED, SealedTable};
use crate::store::{self, migrations, plaintext};
use anyhow::{Context, bail};
use serde_json::json;
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Rows per rotation transaction at most: short enough never to hold a worker up.
const ROTATE_BATCH: f64 = 100.0;
/// Passes over the tables before rows that stay under an old key are reported.
const ROTATE_PASSES: usize = 5;

pub async fn run(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Status { db, json } => status(&db.database_url, json).await,
        KeysCmd::Rotate { db, rate, actor } => rotate(&db.database_url, rate, &actor.name).await,
    }
}

/// What `keys status` found.
struct Status {
    counts: Vec<KeyCount>,
    plaintext: Vec<(&'static str, i64)>,
    keys: Option<DataKeys>,
}

impl Status {
    async fn read(pool: &PgPool) -> anyhow::Result<Self> {
        let counts = keys::counts(pool)
            .await
            .context("cannot count sealed rows")?;
        let plaintext = if plaintext::columns_exist(pool).await? {
            plaintext::remaining_by_table(pool).await?
        } else {
            Vec::new()
        };
        Ok(Self {
            counts,
            plaintext,
            keys: DataKeys::from_env()?,
        })
    }

    fn used(&self) -> BTreeSet<&str> {
        self.counts.iter().map(|c| c.key_id.as_str()).collect()
    }

    /// Key ids rows need that the environment's keys lack (none known without keys).
    fn missing(&self) -> Vec<&str> {
        let Some(keys) = &self.keys else {
            return Vec::new();
        };
        self.used()
            .into_iter()
            .filter(|id| !keys.holds(id))
            .collect()
    }

    /// Held keys no row needs: they can be removed.
    fn unused(&self) -> Vec<&str> {
        let used = self.used();
        self.keys
            .iter()
            .flat_map(|k| k.ids())
            .filter(|id| !used.contains(id))
            .collect()
    }

    fn to_json(&self) -> serde_json::Value {
        let mut by_key: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
        for count in &self.counts {
            by_key
                .entry(&count.key_id)
                .or_default()
                .insert(count.table, count.rows);
        }
        let plaintext: BTreeMap<&str, i64> = self.plaintext.iter().copied().collect();
        json!({
            "active": self.keys.as_ref().map(|k| k.active_id().to_owned()),
            "held": self.keys.as_ref().map(|k| k.ids().collect::<Vec<_>>()),
            "rows": by_key,
            "plaintext": plaintext,
            "missing": self.missing(),
            "unused": self.unused(),
        })
    }

    fn print(&self) {
        let active = self.keys.as_ref().map(DataKeys::active_id);
        println!(
            "{:<26} {:<40} {:<20} {:>10}",
            "TABLE", "SEALED", "KEY ID", "ROWS"
        );
        for table in &SEALED {
            let columns = table.column_names().join(", ");
            for count in self.counts.iter().filter(|c| c.table == table.table) {
                let mark = if Some(count.key_id.as_str()) == active {
                    " (active)"
                } else {
                    ""
                };
                let key = format!("{}{mark}", count.key_id);
                println!(
                    "{:<26} {columns:<40} {key:<20} {:>10}",
                    table.table, count.rows
                );
            }
        }
        for (table, rows) in self.plaintext.iter().filter(|(_, n)| *n > 0) {
            println!("{table:<26} {:<40} {:<20} {rows:>10}", "-", "PLAINTEXT");
        }
        println!();
        for line in self.summary() {
            println!("{line}");
        }
    }

    fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let plaintext: i64 = self.plaintext.iter().map(|(_, n)| n).sum();
        if plaintext > 0 {
            lines.push(format!(
                "{plaintext} rows still hold secrets in plaintext: `wallet-worker migrate` seals them"
            ));
        }
        let Some(keys) = &self.keys else {
            lines
                .push("WALLET_ENCRYPTION_KEYS is not set: which keys are held is not shown".into());
            return lines;
        };
        let missing = self.missing();
        if !missing.is_empty() {
            lines.push(format!(
                "MISSING: rows are sealed under {} that WALLET_ENCRYPTION_KEYS does not hold; workers refuse to start without them",
                missing.join(", ")
            ));
        }
        let behind: i64 = self
            .counts
            .iter()
            .filter(|c| c.key_id != keys.active_id())
            .map(|c| c.rows)
            .sum();
        if behind > 0 {
            lines.push(format!(
                "{behind} rows are not under the active key {}: `wallet-worker keys rotate` re-seals them",
                keys.active_id()
            ));
        } else {
            lines.push(format!(
                "every sealed row is under the active key {}",
                keys.active_id()
            ));
        }
        let unused = self.unused();
        if !unused.is_empty() {
            lines.push(format!(
                "no row needs {}: it can be removed from WALLET_ENCRYPTION_KEYS",
                unused.join(", ")
            ));
        }
        lines
    }
}

async fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let pool = store::connect_existing_since(url, migrations::SEALED_COLUMNS).await?;
    let status = Status::read(&pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status.to_json())?);
    } else {
        status.print();
    }
    Ok(())
}

/// Re-seals, table by table and old key by old key, every row not under the active
/// key, at most `rate` rows a second. Each batch is its own transaction: a stopped
/// rotation loses nothing, and the next run finds the rows still to do.
async fn rotate(url: &str, rate: f64, actor: &str) -> anyhow::Result<()> {
    let data_keys = DataKeys::required_from_env()?;
    let pool = store::connect_existing(url).await?;
    keys::check_held(&pool, &data_keys).await?;
    let keys = keys::keyring(&pool, data_keys).await?;
    let target = serde_json::json!({ "active_key": keys.active_id() });
    let audit_id = audit::open(&pool, actor, Via::Cli, "keys.rotate", &target).await?;
    let mut pace = Pace::new(rate);
    tracing::info!(active = keys.active_id(), rate, "key rotation started");
    let mut total = 0;
    for _ in 0..ROTATE_PASSES {
        let behind = old_keys(&pool, &keys).await?;
        if behind.is_empty() {
            println!(
                "rotation done: {total} rows re-sealed; every sealed row is under the active key {}",
                keys.active_id()
            );
            tracing::info!(
                active = keys.active_id(),
                rows = total,
                "key rotation finished"
            );
            audit::finish(&pool, audit_id).await?;
            return Ok(());
        }
        for (table, old) in behind {
            let rows = rotate_table(&pool, &keys, &table, &old, &mut pace, audit_id).await?;
            println!(
                "{}: {rows} rows re-sealed from key {old} to {}",
                table.table,
                keys.active_id()
            );
            total += rows;
        }
    }
    let behind = old_keys(&pool, &keys).await?;
    let left: Vec<String> = behind
        .iter()
        .map(|(t, k)| format!("{} under {k}", t.table))
        .collect();
    bail!(
        "rows are still sealed under old keys after {ROTATE_PASSES} passes ({}): is a worker \
         still running with one of them as its active key? Run `keys rotate` again once every \
         worker has the new active key",
        left.join(", ")
    )
}

/// Every (table, key id) pair whose rows are not under the active key.
async fn old_keys(pool: &PgPool, keys: &Keyring) -> anyhow::Result<Vec<(SealedTable, String)>> {
    let mut behind = Vec::new();
    for table in SEALED {
        for id in keys::key_ids(pool, &table).await? {
            if id != keys.active_id() {
                behind.push((table, id));
            }
        }
    }
    Ok(behind)
}

async fn rotate_table(
    pool: &PgPool,
    keys: &Keyring,
    table: &SealedTable,
    old: &str,
    pace: &mut Pace,
    audit_id: i64,
) -> anyhow::Result<usize> {
    let mut rows = 0;
    loop {
        let done = keys::rotate_batch(pool, keys, table, old, pace.batch())
            .await
            .with_context(|| format!("cannot re-seal {} rows sealed under {old}", table.table))?;
        if done == 0 {
            return Ok(rows);
        }
        // After the batch's own commit: a rotation killed in between counts one batch
        // short in the audit log (the rows themselves are re-sealed either way).
        let mut conn = pool.acquire().await?;
        audit::counted(&mut conn, audit_id, i64::try_from(done).unwrap_or(i64::MAX)).await?;
        rows += done;
        pace.wait(done).await;
    }
}

/// At most `rate` rows a second, in batches of at most [`ROTATE_BATCH`].
struct Pace {
    rate: f64,
    since: Instant,
    rows: f64,
}

impl Pace {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            since: Instant::now(),
            rows: 0.0,
        }
    }

    fn batch(&self) -> i64 {
        self.rate.clamp(1.0, ROTATE_BATCH) as i64
    }

    /// Sleeps until `rows` more fit the rate.
    async fn wait(&mut self, rows: usize) {
        self.rows += rows as f64;
        let due = self.since + Duration::from_secs_f64(self.rows / self.rate);
        tokio::time::sleep_until(due).await;
    }
}
