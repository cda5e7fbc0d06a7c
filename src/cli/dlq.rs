//! `dlq list|show|summary|replay|purge` (docs/interface.md, dead letters): the dead-letter
//! store, read page by page and printed as it comes, so no command holds more than a
//! page of dead letters; never the broker's queue. Bodies and headers are shown with
//! their secrets masked and never logged.

mod purge;
mod replay;
mod table;

pub use table::{details, table};

use crate::config::{DbArgs, DlqCmd, DlqFilter, DlqNarrow, DlqSelect};
use crate::crypto::DataKeys;
use crate::store::dead_letters::query::{self, Count, MAX_PAGE, Summary};
use crate::store::dead_letters::{Cursor, Filter};
use crate::store::{self};
use anyhow::{Context, bail};
use sqlx::PgPool;
use std::fmt::Write as _;

/// Failure groups the `summary` text shows (`--json` has them all, up to its bound).
const GROUPS_SHOWN: usize = 20;

pub async fn run(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List {
            db,
            limit,
            all,
            filter,
            after,
            json,
        } => {
            let after = after
                .map(|text| {
                    Cursor::parse(&text)
                        .with_context(|| format!("{text} is not a cursor of dlq list"))
                })
                .transpose()?;
            list(
                &db,
                &filter_of(&filter),
                (!all).then_some(limit),
                after,
                json,
            )
            .await
        }
        DlqCmd::Show { db, message_id } => show(&db, &message_id).await,
        DlqCmd::Summary { db, json } => summary(&db, json).await,
        DlqCmd::Replay {
            db,
            amqp,
            select,
            filter,
            rate,
            dry_run,
            actor,
        } => {
            let filter = selection(&select, &filter);
            let run = replay::Run {
                rate,
                dry_run,
                actor: &actor,
            };
            replay::replay(&db, &amqp, &filter, run).await
        }
        DlqCmd::Purge {
            db,
            select,
            filter,
            dry_run,
            yes,
            actor,
        } => {
            let confirm = purge::Confirm::of(select.all && !dry_run, yes);
            purge::purge(&db, &selection(&select, &filter), dry_run, confirm, &actor).await
        }
    }
}

/// The store of `DATABASE_URL`, which must exist with its schema (nothing is created).
async fn open(db: &DbArgs) -> anyhow::Result<PgPool> {
    store::connect_existing(&db.database_url).await
}

/// The data-encryption keys that open stored bodies and headers (from the environment
/// or its file, never the command line): every command that reads them needs them.
fn keys() -> anyhow::Result<DataKeys> {
    Ok(DataKeys::required_from_env()?)
}

async fn list(
    db: &DbArgs,
    filter: &Filter,
    limit: Option<u64>,
    after: Option<Cursor>,
    json: bool,
) -> anyhow::Result<()> {
    let keys = keys()?;
    let pool = open(db).await?;
    let mut out = table::Output::new(json);
    let mut conn = pool.acquire().await?;
    let (mut shown, mut last, mut ended) = (0u64, after, false);
    while limit.is_none_or(|limit| shown < limit) {
        let want = limit.map_or(MAX_PAGE, |limit| {
            (limit - shown).min(MAX_PAGE as u64) as i64
        });
        let rows = query::page(&mut conn, &keys, filter, last.as_ref(), want)
            .await
            .context("cannot list dead letters")?;
        ended = (rows.len() as i64) < want;
        for row in &rows {
            out.entry(row);
        }
        shown += rows.len() as u64;
        last = rows.last().map(Cursor::of).or(last);
        if ended {
            break;
        }
    }
    drop(conn);
    out.finish()?;
    let rest = if ended {
        Count::Exactly(0)
    } else {
        let from_start = after.is_none().then_some(shown);
        query::rest(&pool, filter, last.as_ref(), from_start).await?
    };
    let line = last_line(shown, rest, !filter.is_all(), last.as_ref());
    match (json, rest.is_zero()) {
        (true, true) => {}
        (true, false) => eprintln!("{line}"),
        (false, _) => println!("{line}"),
    }
    Ok(())
}

/// The line after a listing: how many were shown, how many more match, and how to go on.
pub fn last_line(shown: u64, rest: Count, filtered: bool, last: Option<&Cursor>) -> String {
    let matching = if filtered { " matching" } else { "" };
    let more = match rest {
        Count::Exactly(0) if shown == 0 => return format!("no{matching} dead letters"),
        Count::Exactly(0) => {
            let s = if shown == 1 { "" } else { "s" };
            return format!("{shown}{matching} dead letter{s}");
        }
        Count::Exactly(n) => n.to_string(),
        Count::AtLeast(n) => format!("more than {n}"),
    };
    let verb = if filtered { " match" } else { "" };
    let next = last.map_or_else(String::new, |cursor| {
        format!("; next page: --after {cursor}")
    });
    format!("{shown} shown; {more} more{verb}{next}")
}

async fn show(db: &DbArgs, key: &str) -> anyhow::Result<()> {
    let keys = keys()?;
    let pool = open(db).await?;
    let letters = query::show(&pool, &keys, key)
        .await
        .context("cannot read the dead-letter store")?;
    if letters.is_empty() {
        bail!("no dead letter with message id or row id {key}");
    }
    let texts: Vec<String> = letters.iter().map(details).collect();
    print!("{}", texts.join("\n"));
    Ok(())
}

async fn summary(db: &DbArgs, json: bool) -> anyhow::Result<()> {
    let pool = open(db).await?;
    let summary = query::summary(&pool)
        .await
        .context("cannot summarise dead letters")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary_text(&summary));
    }
    Ok(())
}

/// `summary` for people: the total, the time range, then the counts, largest first.
pub fn summary_text(summary: &Summary) -> String {
    let mut out = format!("{} in the store\n", dead_letters(summary.total));
    for (name, at) in [("oldest", &summary.oldest), ("newest", &summary.newest)] {
        if let Some(at) = at {
            let _ = writeln!(out, "{name}  {at}");
        }
    }
    for (title, counts) in [
        ("by error", &summary.by_error),
        ("by type", &summary.by_type),
    ] {
        if counts.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{title}");
        let mut rows: Vec<_> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (key, n) in rows {
            let _ = writeln!(out, "  {key:<width$}  {n:>9}");
        }
    }
    if !summary.by_group.is_empty() {
        out.push_str("by failure group (dlq list --group KEY)\n");
        for group in summary.by_group.iter().take(GROUPS_SHOWN) {
            let kind = group.kind.as_deref().unwrap_or(query::UNKNOWN);
            let _ = writeln!(
                out,
                "  {}  {:>9}  {} {}: {}",
                group.group, group.count, group.error, kind, group.label
            );
        }
        if summary.by_group.len() > GROUPS_SHOWN {
            let more = summary.by_group.len() - GROUPS_SHOWN;
            let _ = writeln!(out, "  … {more} more groups (dlq summary --json)");
        }
    }
    out
}

/// A replay's or purge's selection: one selector, narrowed by the filters.
fn selection(select: &DlqSelect, narrow: &DlqNarrow) -> Filter {
    let mut filter = narrowed(narrow);
    filter.ids = select.id.clone();
    filter.kind = select.kind.clone();
    filter.error = select.error.clone();
    filter.group = select.group.clone();
    filter
}

fn filter_of(filter: &DlqFilter) -> Filter {
    Filter {
        error: filter.error.clone(),
        kind: filter.kind.clone(),
        group: filter.group.clone(),
        ..narrowed(&filter.narrow)
    }
}

fn narrowed(narrow: &DlqNarrow) -> Filter {
    Filter {
        since: narrow.since,
        until: narrow.until,
        order: narrow.order.clone(),
        customer: narrow.customer.clone(),
        ..Filter::default()
    }
}

/// A selection by id, type, error or group that found nothing is an error (one line),
/// not a quiet no-op.
fn nothing_matched(filter: &Filter, picked: u64) -> anyhow::Result<()> {
    if picked > 0 {
        return Ok(());
    }
    if !filter.ids.is_empty() {
        bail!("no dead letter with message id {}", filter.ids.join(", "));
    }
    for (what, value) in [
        ("of type", &filter.kind),
        ("with error", &filter.error),
        ("in group", &filter.group),
    ] {
        if let Some(value) = value {
            bail!("no dead letter {what} {value}");
        }
    }
    Ok(())
}

/// `n dead letter(s)`.
pub fn dead_letters(n: u64) -> String {
    format!("{n} dead letter{}", if n == 1 { "" } else { "s" })
}
