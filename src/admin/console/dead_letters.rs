//! The dead letters: grouped by error kind and by type (`dlq summary`) and a page of
//! them with filters (`dlq list`); one in full with its secrets masked ([`show`]);
//! replay and purge by id, error kind or type ([`actions`]). Each request opens a broker
//! connection of its own and goes through [`crate::broker::dlq`], so memory stays bounded
//! by a page, and a console user and the `dlq` command never see each other's half-done
//! pass (the second one is told to try again).

mod actions;
mod show;

pub use actions::{purge, replay};
pub use show::show;

use super::Console;
use super::layout::{self, Nav, Notice, or_dash};
use crate::broker::dlq::{self, DeadLetterEntry, DlqError, ListReport, Selection, Summary};
use crate::html::{escape, query_value};
use axum::extract::{Query, State};
use axum::response::Html;
use lapin::Connection;
use serde::Deserialize;
use std::fmt::Write as _;

/// Dead letters on a page unless `?limit=` says otherwise, and the most it may say.
const PAGE: u64 = 50;
const MAX_PAGE: u64 = 500;

/// Why a dead-letter request could not be served, as a notice code.
#[derive(Debug, Clone, Copy)]
enum Problem {
    Busy,
    Missing,
    Broker,
}

impl Problem {
    fn code(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Missing => "missing",
            Self::Broker => "broker",
        }
    }
}

impl From<DlqError> for Problem {
    fn from(err: DlqError) -> Self {
        match err {
            DlqError::Busy(_) => Self::Busy,
            DlqError::Missing(_) => Self::Missing,
            other => {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::new(other)),
                    "console: dead-letter operation failed"
                );
                Self::Broker
            }
        }
    }
}

async fn connect(console: &Console) -> Result<Connection, Problem> {
    match crate::broker::connect_any(console.admin.amqp_url.expose(), "console").await {
        Ok((connection, _node)) => Ok(connection),
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "console: cannot reach the broker"
            );
            Err(Problem::Broker)
        }
    }
}

async fn close(connection: Connection) {
    let _ = connection.close(200, "done".into()).await;
}

/// `GET /ui/dlq?type=&error=&offset=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    error: Option<String>,
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

/// What a page of dead letters shows.
struct Listing {
    summary: Summary,
    entries: Vec<DeadLetterEntry>,
    report: ListReport,
}

pub async fn page(
    State(console): State<Console>,
    Query(query): Query<ListQuery>,
    Query(notice): Query<Notice>,
) -> Html<String> {
    let filter = Selection {
        kind: query.kind.clone().filter(|k| !k.is_empty()),
        error: query.error.clone().filter(|e| !e.is_empty()),
        ..Selection::default()
    };
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let body = match read(&console, &filter, query.offset, limit).await {
        Ok(listing) => [
            summary_html(&console, &listing.summary),
            filter_html(&listing.summary, &filter),
            list_html(&console, &listing, &filter, query.offset, limit),
        ]
        .concat(),
        Err(problem) => Notice::showing(problem.code()).html(),
    };
    let queue = console.admin.topology.dead_letter_queue();
    let body = format!(
        r#"<p class="hint">Queue <code>{}</code>. Reading it leaves it as it was; replay republishes to the worker's exchange, acked only once the broker confirmed.</p>{body}"#,
        escape(&queue)
    );
    layout::page("Dead letters", Nav::DeadLetters, &notice, &body)
}

/// The summary, then the page: two passes, each leaving the queue as it was.
async fn read(
    console: &Console,
    filter: &Selection,
    offset: u64,
    limit: u64,
) -> Result<Listing, Problem> {
    let connection = connect(console).await?;
    let topology = &console.admin.topology;
    let mut entries = Vec::new();
    let mut seen = 0;
    let passes = async {
        let summary = dlq::summary(&connection, topology).await?;
        let keep = |entry| {
            if seen >= offset {
                entries.push(entry);
            }
            seen += 1;
        };
        let report = dlq::list(&connection, topology, filter, Some(offset + limit), keep).await?;
        Ok::<_, DlqError>((summary, report))
    }
    .await;
    close(connection).await;
    let (summary, report) = passes?;
    Ok(Listing {
        summary,
        entries,
        report,
    })
}

fn summary_html(console: &Console, summary: &Summary) -> String {
    let mut out = format!(
        r#"<div class="cards"><div class="card" data-card="dlq-total"><div class="label">In the queue</div><div class="value">{total}</div></div><div class="card"><div class="label">Oldest</div><div class="value small">{oldest}</div></div><div class="card"><div class="label">Newest</div><div class="value small">{newest}</div></div></div><div class="two">"#,
        total = summary.total,
        oldest = or_dash(summary.oldest.as_deref()),
        newest = or_dash(summary.newest.as_deref()),
    );
    for (title, table, field, counts) in [
        ("By error kind", "by-error", "error", &summary.by_error),
        ("By type", "by-dlq-type", "type", &summary.by_type),
    ] {
        let mut rows: Vec<_> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut body = String::new();
        for (key, n) in rows {
            let selectable = key != dlq::UNKNOWN && key != dlq::OTHER;
            let name = if selectable {
                format!(
                    r#"<a href="/ui/dlq?{field}={q}"><code>{k}</code></a>"#,
                    q = query_value(key),
                    k = escape(key)
                )
            } else {
                format!("<code>{}</code>", escape(key))
            };
            let actions = if selectable {
                group_actions(console, field, key, *n)
            } else {
                String::new()
            };
            let _ = write!(
                body,
                r#"<tr data-{field}="{k}"><td>{name}</td><td class="num" data-count="{n}">{n}</td><td class="actions">{actions}</td></tr>"#,
                k = escape(key),
            );
        }
        if counts.is_empty() {
            body.push_str(r#"<tr><td colspan="3">None.</td></tr>"#);
        }
        let _ = write!(
            out,
            r#"<div><h2>{title}</h2><table class="grid" id="{table}"><tbody>{body}</tbody></table></div>"#
        );
    }
    out.push_str("</div>");
    out
}

/// Replay and purge of every dead letter with this error kind or type.
fn group_actions(console: &Console, field: &str, key: &str, n: u64) -> String {
    let what = if field == "error" { "error" } else { "type" };
    let replay = layout::action(
        "/ui/dlq/replay",
        &[(field, key)],
        "Replay all",
        "small",
        Some(&format!("Replay all {n} dead letters with {what} {key}?")),
        &console.form_token,
    );
    let purge = layout::action(
        "/ui/dlq/purge",
        &[(field, key)],
        "Purge all",
        "small danger",
        Some(&format!(
            "Purge all {n} dead letters with {what} {key}? They are gone for good."
        )),
        &console.form_token,
    );
    format!("{replay}{purge}")
}

/// The keys a selection can name (not the summary's catch-alls).
fn selectable(counts: &std::collections::BTreeMap<String, u64>) -> Vec<&String> {
    counts
        .keys()
        .filter(|k| *k != dlq::UNKNOWN && *k != dlq::OTHER)
        .collect()
}

fn filter_html(summary: &Summary, filter: &Selection) -> String {
    let options = |keys: Vec<&String>, chosen: Option<&String>| {
        let mut out = r#"<option value="">any</option>"#.to_owned();
        for key in keys {
            let selected = if Some(key) == chosen { " selected" } else { "" };
            let _ = write!(
                out,
                r#"<option value="{k}"{selected}>{k}</option>"#,
                k = escape(key)
            );
        }
        out
    };
    format!(
        r#"<h2>List</h2><form class="filters" method="get" action="/ui/dlq"><label>Type <select name="type">{types}</select></label> <label>Error <select name="error">{errors}</select></label> <button type="submit">Filter</button> <a href="/ui/dlq">clear</a></form>"#,
        types = options(selectable(&summary.by_type), filter.kind.as_ref()),
        errors = options(selectable(&summary.by_error), filter.error.as_ref()),
    )
}

fn list_html(
    console: &Console,
    listing: &Listing,
    filter: &Selection,
    offset: u64,
    limit: u64,
) -> String {
    let mut rows = String::new();
    for entry in &listing.entries {
        let id = &entry.message_id;
        let actions = if id == "-" {
            String::new()
        } else {
            format!(
                r#"<a class="button small" href="/ui/dlq/show?id={q}">Show</a>{buttons}"#,
                q = query_value(id),
                buttons = layout::dead_letter_actions(id, true, &console.form_token),
            )
        };
        let _ = write!(
            rows,
            r#"<tr data-message-id="{id}"><td class="num">{position}</td><td><code>{id}</code></td><td>{kind}</td><td>{error}</td><td class="num">{attempts}</td><td>{at}</td><td class="num">{bytes}</td><td class="detail">{detail}</td><td class="actions">{actions}</td></tr>"#,
            id = escape(id),
            position = entry.position,
            kind = or_dash(entry.routing_key.as_deref()),
            error = or_dash(entry.error.as_deref()),
            attempts = entry
                .attempts
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
            at = or_dash(entry.dead_lettered_at.as_deref()),
            bytes = entry.body_size(),
            detail = or_dash(entry.error_detail.as_deref()),
        );
    }
    let report = &listing.report;
    let matching = report.shown + report.more;
    let shown = listing.entries.len() as u64;
    if shown == 0 {
        rows.push_str(r#"<tr><td colspan="9">No dead letters here.</td></tr>"#);
    }
    let from = if shown == 0 { 0 } else { offset + 1 };
    let page_link = |offset: u64, text: &str| {
        let mut href = format!("/ui/dlq?offset={offset}&limit={limit}");
        if let Some(kind) = &filter.kind {
            let _ = write!(href, "&type={}", query_value(kind));
        }
        if let Some(error) = &filter.error {
            let _ = write!(href, "&error={}", query_value(error));
        }
        format!(
            r#"<a class="button small" href="{}">{text}</a>"#,
            escape(&href)
        )
    };
    let mut pager = format!(
        r#"<span data-matching="{matching}">{from}–{to} of {matching}</span> "#,
        to = offset + shown,
    );
    if offset > 0 {
        pager.push_str(&page_link(offset.saturating_sub(limit), "← previous"));
    }
    if report.more > 0 {
        pager.push_str(&page_link(offset + limit, "next →"));
    }
    format!(
        r#"<table class="grid" id="dead-letters"><thead><tr><th class="num">#</th><th>Message id</th><th>Type</th><th>Error</th><th class="num">Attempts</th><th>Dead-lettered at</th><th class="num">Bytes</th><th>Detail</th><th></th></tr></thead><tbody>{rows}</tbody></table><p class="pager">{pager}</p>"#
    )
}
