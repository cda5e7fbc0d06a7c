//! `dlq list|show|replay|purge`: formats what [`crate::broker::dlq`] returns. Bodies are
//! shown with their secrets masked and never logged.

use crate::broker::dlq::{self, DeadLetterEntry, DisplayBody, ReplayOptions, Selection};
use crate::broker::{self, Topology};
use crate::config::{AmqpArgs, DlqCmd, DlqSelect};
use anyhow::{Context, bail};
use lapin::Connection;
use std::fmt::Write as _;

pub async fn run(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { amqp, json } => list(&amqp, json).await,
        DlqCmd::Show { amqp, message_id } => show(&amqp, &message_id).await,
        DlqCmd::Replay {
            amqp,
            select,
            dry_run,
        } => replay(&amqp, &selection(&select), dry_run).await,
        DlqCmd::Purge { amqp, all, id } => {
            let selection = if all {
                Selection::All
            } else {
                Selection::Ids(id)
            };
            purge(&amqp, &selection).await
        }
    }
}

async fn list(amqp: &AmqpArgs, json: bool) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let entries = dlq::list(&connection, &topology).await;
    close(connection).await;
    let entries = entries.context("cannot list dead letters")?;
    if json {
        let docs: Vec<_> = entries.iter().map(DeadLetterEntry::to_json).collect();
        println!("{}", serde_json::to_string_pretty(&docs)?);
    } else {
        print!("{}", table(&entries, &topology.dead_letter_queue()));
    }
    Ok(())
}

async fn show(amqp: &AmqpArgs, message_id: &str) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let entries = dlq::list(&connection, &topology).await;
    close(connection).await;
    let entries = entries.context("cannot read dead letters")?;
    let total = entries.len();
    let shown: Vec<String> = entries
        .iter()
        .filter(|e| e.message_id == message_id)
        .map(|e| details(e, total))
        .collect();
    if shown.is_empty() {
        let queue = topology.dead_letter_queue();
        bail!("no dead letter with message id {message_id} in {queue}");
    }
    print!("{}", shown.join("\n"));
    Ok(())
}

async fn replay(amqp: &AmqpArgs, selection: &Selection, dry_run: bool) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let options = ReplayOptions {
        dry_run,
        ..Default::default()
    };
    let report = dlq::replay(&connection, &topology, selection, options).await;
    close(connection).await;
    let report = report.context("cannot replay dead letters")?;
    let verb = if dry_run { "would replay" } else { "replayed" };
    for r in &report.replayed {
        println!("{verb} {} to {}", r.message_id, r.routing_key);
    }
    for f in &report.failed {
        eprintln!("not replayed {}: {}", f.message_id, f.reason);
    }
    nothing_matched(
        selection,
        report.replayed.len() + report.failed.len(),
        &topology,
    )?;
    report_unknown(&report.unknown_ids);
    let note = if dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let total = dead_letters(report.total as u64);
    println!("{verb} {} of {total}{note}", report.replayed.len());
    if !report.failed.is_empty() {
        let failed = dead_letters(report.failed.len() as u64);
        bail!("{failed} could not be replayed and stay in the queue");
    }
    Ok(())
}

async fn purge(amqp: &AmqpArgs, selection: &Selection) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let report = dlq::purge(&connection, &topology, selection).await;
    close(connection).await;
    let report = report.context("cannot purge dead letters")?;
    let purged = usize::try_from(report.purged).unwrap_or(usize::MAX);
    nothing_matched(selection, purged, &topology)?;
    report_unknown(&report.unknown_ids);
    let queue = topology.dead_letter_queue();
    println!("purged {} from {queue}", dead_letters(report.purged));
    Ok(())
}

fn selection(select: &DlqSelect) -> Selection {
    match (&select.kind, select.all) {
        (_, true) => Selection::All,
        (Some(kind), false) => Selection::Type(kind.clone()),
        (None, false) => Selection::Ids(select.id.clone()),
    }
}

async fn connect(amqp: &AmqpArgs) -> anyhow::Result<(Connection, Topology)> {
    let (connection, _node) = broker::connect_any(&amqp.amqp_url, "dlq")
        .await
        .context("cannot reach RabbitMQ at AMQP_URL")?;
    // Only the names matter here; the retry levels are the defaults'.
    Ok((
        connection,
        Topology::new(&amqp.exchange, &amqp.queue, 1000, 600_000),
    ))
}

async fn close(connection: Connection) {
    let _ = connection.close(200, "done".into()).await;
}

fn report_unknown(ids: &[String]) {
    if !ids.is_empty() {
        eprintln!("no dead letter with message id {}", ids.join(", "));
    }
}

/// A selection by id or type that found nothing is an error (one line), not a quiet
/// no-op; when only some ids are unknown, [`report_unknown`] names them.
fn nothing_matched(
    selection: &Selection,
    picked: usize,
    topology: &Topology,
) -> anyhow::Result<()> {
    let queue = topology.dead_letter_queue();
    match selection {
        Selection::Ids(ids) if picked == 0 => bail!(
            "no dead letter with message id {} in {queue}",
            ids.join(", ")
        ),
        Selection::Type(kind) if picked == 0 => bail!("no dead letter of type {kind} in {queue}"),
        _ => Ok(()),
    }
}

fn dead_letters(n: u64) -> String {
    format!("{n} dead letter{}", if n == 1 { "" } else { "s" })
}

/// The `list` table: one aligned row per dead letter, the free-text detail last.
pub fn table(entries: &[DeadLetterEntry], queue: &str) -> String {
    if entries.is_empty() {
        return format!("no dead letters in {queue}\n");
    }
    let header = [
        "#",
        "MESSAGE ID",
        "TYPE",
        "ERROR",
        "ATTEMPTS",
        "DEAD-LETTERED AT",
        "BYTES",
        "DETAIL",
    ];
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            [
                e.position.to_string(),
                e.message_id.clone(),
                or_dash(&e.routing_key),
                or_dash(&e.error),
                e.attempts.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                or_dash(&e.dead_lettered_at),
                e.body_size().to_string(),
                or_dash(&e.error_detail),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 8]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let _ = match i {
                7 => write!(text, "{cell}"),
                0 | 4 | 6 => write!(text, "{cell:>w$}  ", w = widths[i]),
                _ => write!(text, "{cell:<w$}  ", w = widths[i]),
            };
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    let _ = writeln!(out, "{} in {queue}", dead_letters(entries.len() as u64));
    out
}

/// `show`: one dead letter with its properties, headers and body.
pub fn details(entry: &DeadLetterEntry, total: usize) -> String {
    let mut out = format!("dead letter {} of {total}\n", entry.position);
    let summary = [
        ("message id", entry.message_id.clone()),
        ("type", or_dash(&entry.routing_key)),
        ("error", or_dash(&entry.error)),
        ("detail", or_dash(&entry.error_detail)),
        (
            "attempts",
            entry
                .attempts
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ),
        ("dead-lettered at", or_dash(&entry.dead_lettered_at)),
        ("body size", format!("{} bytes", entry.body_size())),
    ];
    for (name, value) in summary {
        let _ = writeln!(out, "  {name:<18} {value}");
    }
    out.push_str("properties\n");
    for (name, value) in entry.property_texts() {
        let _ = writeln!(out, "  {name:<18} {value}");
    }
    out.push_str("headers\n");
    for (name, value) in entry.headers() {
        let _ = writeln!(out, "  {name:<30} {value}");
    }
    match entry.display_body(true) {
        DisplayBody::Text(text) => out.push_str(&format!("body\n{text}\n")),
        DisplayBody::Base64(encoded) => {
            out.push_str(&format!("body (not UTF-8, base64)\n{encoded}\n"))
        }
    }
    out
}

fn or_dash(value: &Option<String>) -> String {
    value.clone().unwrap_or_else(|| "-".to_owned())
}
