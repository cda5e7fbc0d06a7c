//! `dlq purge` (docs/operations.md, purge): deletes the selected dead letters in
//! batches, each recorded in the audit log as it commits. `--all` asks first unless
//! `--yes`; without a terminal to ask on, it refuses.

use super::{dead_letters, nothing_matched, open};
use crate::config::DbArgs;
use crate::crypto::DataKeys;
use crate::store::audit;
use crate::store::dead_letters::{Cursor, Filter, purge, query};
use anyhow::{Context, bail};
use sqlx::PgPool;
use std::io::{BufRead, IsTerminal, Write};

/// Dead letters per transaction.
const BATCH: i64 = 1000;

/// Whether to ask before purging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Ask,
    Given,
}

impl Confirm {
    /// Asking is for `--all` (not a dry run) without `--yes`.
    pub fn of(purges_all: bool, yes: bool) -> Self {
        if purges_all && !yes {
            Self::Ask
        } else {
            Self::Given
        }
    }
}

pub async fn purge(
    db: &DbArgs,
    filter: &Filter,
    dry_run: bool,
    confirm: Confirm,
    actor: &str,
) -> anyhow::Result<()> {
    if confirm == Confirm::Ask && !std::io::stdin().is_terminal() {
        bail!(
            "dlq purge --all asks for confirmation and stdin is not a terminal; add --yes to purge every dead letter"
        );
    }
    let pool = open(db).await?;
    if dry_run {
        return dry_run_of(&pool, &super::keys()?, filter).await;
    }
    if confirm == Confirm::Ask && !confirmed(&pool).await? {
        bail!("nothing purged");
    }
    let target = serde_json::to_value(filter)?;
    let audit_id = audit::open(&pool, actor, audit::Via::Cli, "dlq.purge", &target).await?;
    let (mut purged, mut cursor) = (0u64, None::<Cursor>);
    loop {
        let (n, next) = purge::batch(&pool, audit_id, filter, cursor.as_ref(), BATCH)
            .await
            .context("cannot purge dead letters")?;
        purged += n;
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    audit::finish(&pool, audit_id).await?;
    nothing_matched(filter, purged)?;
    println!("purged {} from the dead-letter store", dead_letters(purged));
    Ok(())
}

/// Asks on the terminal, naming how many would go.
async fn confirmed(pool: &PgPool) -> anyhow::Result<bool> {
    let total = query::summary(pool).await?.total;
    print!(
        "Purge all {} from the dead-letter store? [y/N] ",
        dead_letters(total)
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Prints what a purge would delete, page by page; changes nothing.
async fn dry_run_of(pool: &PgPool, keys: &DataKeys, filter: &Filter) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    let (mut n, mut cursor) = (0u64, None);
    loop {
        let page = query::page(&mut conn, keys, filter, cursor.as_ref(), query::MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = Some(Cursor::of(last));
        for letter in &page {
            let id = letter
                .message_id
                .clone()
                .unwrap_or_else(|| format!("#{}", letter.id));
            println!(
                "would purge {id} ({}, {})",
                letter.routing_key.as_deref().unwrap_or("-"),
                letter.error
            );
        }
        n += page.len() as u64;
    }
    nothing_matched(filter, n)?;
    println!("would purge {} (dry run: nothing changed)", dead_letters(n));
    Ok(())
}
