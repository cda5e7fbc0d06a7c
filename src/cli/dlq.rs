//! `dlq list|show|summary|replay|purge`: prints what [`crate::broker::dlq`] hands over,
//! as it comes, so no command keeps more than one screenful of dead letters. Bodies
//! are shown with their secrets masked and never logged.

use crate::broker::dlq::{
    self, DeadLetterEntry, DisplayBody, ReplayOptions, ReplayStep, Selection, Summary,
};
use crate::broker::{self, Topology};
use crate::config::{AmqpArgs, DlqCmd, DlqFilter, DlqSelect};
use anyhow::{Context, bail};
use lapin::Connection;
use std::fmt::Write as _;
use std::io::Write as _;

/// Rows the `list` table reads before it fixes its column widths.
const WIDTH_SAMPLE: usize = 100;

pub async fn run(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List {
            amqp,
            limit,
            all,
            filter,
            json,
        } => list(&amqp, &filter_of(&filter), (!all).then_some(limit), json).await,
        DlqCmd::Show { amqp, message_id } => show(&amqp, &message_id).await,
        DlqCmd::Summary { amqp, json } => summary(&amqp, json).await,
        DlqCmd::Replay {
            amqp,
            select,
            since,
            rate,
            dry_run,
        } => {
            let options = ReplayOptions {
                dry_run,
                rate,
                ..Default::default()
            };
            replay(&amqp, &selection(&select).since(since), options).await
        }
        DlqCmd::Purge { amqp, select } => purge(&amqp, &selection(&select)).await,
    }
}

async fn list(
    amqp: &AmqpArgs,
    filter: &Selection,
    limit: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let queue = topology.dead_letter_queue();
    let mut out = Output::new(json);
    let report = dlq::list(&connection, &topology, filter, limit, |e| out.entry(e)).await;
    close(connection).await;
    let report = report.context("cannot list dead letters")?;
    out.finish()?;
    let last = last_line(&report, filter.is_all(), &queue);
    if json {
        if report.more > 0 {
            eprintln!("{last}");
        }
    } else {
        println!("{last}");
    }
    Ok(())
}

/// The line after the listing: how many were shown, and how many more match.
pub fn last_line(report: &dlq::ListReport, unfiltered: bool, queue: &str) -> String {
    let (shown, more, depth) = (report.shown, report.more, report.depth);
    match (unfiltered, more) {
        (true, 0) if shown == 0 => format!("no dead letters in {queue}"),
        (true, 0) => format!("{} in {queue}", dead_letters(shown)),
        (true, _) => format!(
            "{shown} shown; {more} more in {queue} ({} in all; use --limit N or --all)",
            dead_letters(depth)
        ),
        (false, 0) => format!("{shown} matching of {} in {queue}", dead_letters(depth)),
        (false, _) => format!(
            "{shown} shown; {more} more match, of {} in {queue} (use --limit N or --all)",
            dead_letters(depth)
        ),
    }
}

async fn show(amqp: &AmqpArgs, message_id: &str) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let shown = dlq::show(&connection, &topology, message_id).await;
    close(connection).await;
    let shown = shown.context("cannot read dead letters")?;
    if shown.entries.is_empty() {
        let queue = topology.dead_letter_queue();
        bail!("no dead letter with message id {message_id} in {queue}");
    }
    let depth = usize::try_from(shown.depth).unwrap_or(usize::MAX);
    let texts: Vec<String> = shown.entries.iter().map(|e| details(e, depth)).collect();
    print!("{}", texts.join("\n"));
    if shown.more > 0 {
        println!("\n{} more with this message id", dead_letters(shown.more));
    }
    Ok(())
}

async fn summary(amqp: &AmqpArgs, json: bool) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let summary = dlq::summary(&connection, &topology).await;
    close(connection).await;
    let summary = summary.context("cannot summarise dead letters")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary_text(&summary, &topology.dead_letter_queue()));
    }
    Ok(())
}

/// `summary` for people: the total, the time range, then the counts, largest first.
pub fn summary_text(summary: &Summary, queue: &str) -> String {
    let mut out = format!("{} in {queue}\n", dead_letters(summary.total));
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
    out
}

async fn replay(
    amqp: &AmqpArgs,
    selection: &Selection,
    options: ReplayOptions,
) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let verb = if options.dry_run {
        "would replay"
    } else {
        "replayed"
    };
    // Line by line, so whoever watches a long replay sees its progress.
    let mut stdout = std::io::stdout().lock();
    let report = dlq::replay(
        &connection,
        &topology,
        selection,
        options,
        |step| match step {
            ReplayStep::Replayed(r) => {
                let _ = writeln!(stdout, "{verb} {} to {}", r.message_id, r.routing_key);
            }
            ReplayStep::Failed(f) => {
                let _ = stdout.flush();
                eprintln!("not replayed {}: {}", f.message_id, f.reason);
            }
        },
    )
    .await;
    drop(stdout);
    close(connection).await;
    let report = report.context("cannot replay dead letters")?;
    nothing_matched(selection, report.replayed + report.failed, &topology)?;
    report_unknown(&report.unknown_ids);
    let note = if options.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    let total = dead_letters(report.total);
    println!("{verb} {} of {total}{note}", report.replayed);
    if report.failed > 0 {
        let failed = dead_letters(report.failed);
        bail!("{failed} could not be replayed and stay in the queue");
    }
    Ok(())
}

async fn purge(amqp: &AmqpArgs, selection: &Selection) -> anyhow::Result<()> {
    let (connection, topology) = connect(amqp).await?;
    let report = dlq::purge(&connection, &topology, selection).await;
    close(connection).await;
    let report = report.context("cannot purge dead letters")?;
    nothing_matched(selection, report.purged, &topology)?;
    report_unknown(&report.unknown_ids);
    let queue = topology.dead_letter_queue();
    println!("purged {} from {queue}", dead_letters(report.purged));
    Ok(())
}

fn selection(select: &DlqSelect) -> Selection {
    if select.all {
        Selection::all()
    } else if let Some(kind) = &select.kind {
        Selection::of_type(kind)
    } else if let Some(error) = &select.error {
        Selection::of_error(error)
    } else {
        Selection::ids(select.id.clone())
    }
}

fn filter_of(filter: &DlqFilter) -> Selection {
    Selection {
        kind: filter.kind.clone(),
        error: filter.error.clone(),
        since: filter.since,
        ..Selection::default()
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

/// A selection by id, type or error that found nothing is an error (one line), not a
/// quiet no-op; when only some ids are unknown, [`report_unknown`] names them.
fn nothing_matched(selection: &Selection, picked: u64, topology: &Topology) -> anyhow::Result<()> {
    let queue = topology.dead_letter_queue();
    if picked > 0 {
        return Ok(());
    }
    if !selection.ids.is_empty() {
        bail!(
            "no dead letter with message id {} in {queue}",
            selection.ids.join(", ")
        );
    }
    if let Some(kind) = &selection.kind {
        bail!("no dead letter of type {kind} in {queue}");
    }
    if let Some(error) = &selection.error {
        bail!("no dead letter with error {error} in {queue}");
    }
    Ok(())
}

fn dead_letters(n: u64) -> String {
    format!("{n} dead letter{}", if n == 1 { "" } else { "s" })
}

/// Where `list` writes, entry by entry: JSON array elements, or table rows whose
/// widths are fixed by the first [`WIDTH_SAMPLE`] rows.
struct Output {
    json: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    sample: Vec<[String; 8]>,
    widths: Option<[usize; 8]>,
    written: u64,
    error: Option<std::io::Error>,
}

impl Output {
    fn new(json: bool) -> Self {
        Self {
            json,
            out: std::io::BufWriter::new(std::io::stdout()),
            sample: Vec::new(),
            widths: None,
            written: 0,
            error: None,
        }
    }

    fn entry(&mut self, entry: DeadLetterEntry) {
        if self.json {
            let sep = if self.written == 0 { "[\n" } else { ",\n" };
            let doc = entry.to_json();
            let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
            self.write(&format!("{sep}{text}"));
            self.written += 1;
            return;
        }
        let row = row(&entry);
        match self.widths {
            Some(widths) => {
                let line = line(&row.each_ref().map(String::as_str), &widths);
                self.write(&line);
            }
            None => {
                self.sample.push(row);
                if self.sample.len() >= WIDTH_SAMPLE {
                    self.flush_sample();
                }
            }
        }
    }

    fn flush_sample(&mut self) {
        if self.widths.is_some() || self.sample.is_empty() {
            return;
        }
        let widths = widths(&self.sample);
        self.widths = Some(widths);
        let mut text = line(&HEADER, &widths);
        for row in std::mem::take(&mut self.sample) {
            text.push_str(&line(&row.each_ref().map(String::as_str), &widths));
        }
        self.write(&text);
    }

    fn write(&mut self, text: &str) {
        if self.error.is_none()
            && let Err(err) = self.out.write_all(text.as_bytes())
        {
            self.error = Some(err);
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.json {
            let end = if self.written == 0 { "[]\n" } else { "\n]\n" };
            self.write(end);
        } else {
            self.flush_sample();
        }
        if let Some(err) = self.error.take() {
            return Err(err).context("cannot write the listing");
        }
        self.out.flush().context("cannot write the listing")
    }
}

const HEADER: [&str; 8] = [
    "#",
    "MESSAGE ID",
    "TYPE",
    "ERROR",
    "ATTEMPTS",
    "DEAD-LETTERED AT",
    "BYTES",
    "DETAIL",
];

fn row(e: &DeadLetterEntry) -> [String; 8] {
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
}

fn widths(rows: &[[String; 8]]) -> [usize; 8] {
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

fn line(cells: &[&str; 8], widths: &[usize; 8]) -> String {
    let mut text = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let _ = match i {
            7 => write!(text, "{cell}"),
            0 | 4 | 6 => write!(text, "{cell:>w$}  ", w = widths[i]),
            _ => write!(text, "{cell:<w$}  ", w = widths[i]),
        };
    }
    let mut text = text.trim_end().to_owned();
    text.push('\n');
    text
}

/// The `list` table of `entries` (header, rows, a count), as the command prints it.
pub fn table(entries: &[DeadLetterEntry], queue: &str) -> String {
    if entries.is_empty() {
        return format!("no dead letters in {queue}\n");
    }
    let rows: Vec<[String; 8]> = entries.iter().map(row).collect();
    let widths = widths(&rows);
    let mut out = line(&HEADER, &widths);
    for row in &rows {
        out.push_str(&line(&row.each_ref().map(String::as_str), &widths));
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
