//! The dead letters, from the dead-letter store (docs/operations.md, the dead-letter
//! store): the failure groups with their counts and first and last seen, and the totals
//! by error kind and type, each replayed or purged in one action; a filtered list with
//! keyset pages ([`list`]); one dead letter in full with its secrets masked ([`show`]);
//! replay and purge ([`actions`]); what operators did ([`history`]). Each page view is
//! one indexed query on the store and nothing on the broker, so it costs milliseconds
//! whatever the number of dead letters, and any number of people can look at once.

mod actions;
mod history;
mod list;
mod show;

pub use actions::{purge, replay};
pub use history::history;
pub use list::list;
pub use show::show;

use super::Console;
use super::layout::{self, Nav, Notice, or_dash};
use crate::error_chain::ErrorChain;
use crate::html::{escape, query_value};
use crate::store::dead_letters::query::{self, OTHER, Summary, UNKNOWN};
use axum::extract::{Query, State};
use axum::response::Html;
use std::fmt::Write as _;

/// Failure groups the page shows, largest first.
const GROUPS_SHOWN: usize = 200;

/// `GET /ui/dlq`: the groups.
pub async fn page(State(console): State<Console>, Query(notice): Query<Notice>) -> Html<String> {
    let body = match query::summary(&console.admin.pool).await {
        Ok(summary) => [
            cards(&summary),
            totals(&console, &summary),
            groups(&console, &summary),
        ]
        .concat(),
        Err(err) => {
            tracing::error!(
                error = %ErrorChain(&err),
                "console: cannot read the dead-letter store"
            );
            Notice::showing("database").html()
        }
    };
    let body = format!(
        r#"<p class="hint">Dead letters waiting in the store, grouped by cause. Replay puts them back on their routing key through the outbox; purge deletes them. <a href="/ui/dlq/list">List them all</a> · <a href="/ui/dlq/history">history of replays and purges</a></p>{body}"#
    );
    layout::page("Dead letters", Nav::DeadLetters, &notice, &body)
}

fn cards(summary: &Summary) -> String {
    format!(
        r#"<div class="cards"><div class="card" data-card="dlq-total"><div class="label">Waiting</div><div class="value">{total}</div></div><div class="card"><div class="label">Oldest</div><div class="value small">{oldest}</div></div><div class="card"><div class="label">Newest</div><div class="value small">{newest}</div></div><div class="card"><div class="label">Failure groups</div><div class="value">{groups}</div></div></div>"#,
        total = summary.total,
        oldest = or_dash(summary.oldest.as_deref()),
        newest = or_dash(summary.newest.as_deref()),
        groups = summary.by_group.len(),
    )
}

/// The totals by error kind and by type, each with its replay and purge.
fn totals(console: &Console, summary: &Summary) -> String {
    let mut out = String::from(r#"<div class="two">"#);
    for (title, table, field, counts) in [
        ("By error kind", "by-error", "error", &summary.by_error),
        ("By type", "by-dlq-type", "type", &summary.by_type),
    ] {
        let mut rows: Vec<_> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut body = String::new();
        for (key, n) in rows {
            let selectable = key != UNKNOWN && key != OTHER;
            let (name, actions) = if selectable {
                (
                    format!(
                        r#"<a href="/ui/dlq/list?{field}={q}"><code>{k}</code></a>"#,
                        q = query_value(key),
                        k = escape(key)
                    ),
                    group_actions(
                        console,
                        field,
                        key,
                        &format!("{n} dead letters with {field} {key}"),
                    ),
                )
            } else {
                (format!("<code>{}</code>", escape(key)), String::new())
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

/// The failure groups, largest first.
fn groups(console: &Console, summary: &Summary) -> String {
    let mut rows = String::new();
    for group in summary.by_group.iter().take(GROUPS_SHOWN) {
        let kind = group.kind.as_deref().unwrap_or(UNKNOWN);
        let what = format!("{} dead letters of group {}", group.count, group.label);
        let _ = write!(
            rows,
            r#"<tr data-group="{key}"><td class="detail"><a href="/ui/dlq/list?group={key}">{label}</a></td><td><code>{error}</code></td><td><code>{kind}</code></td><td class="num" data-count="{n}">{n}</td><td>{first}</td><td>{last}</td><td class="actions">{actions}</td></tr>"#,
            key = escape(&group.group),
            label = escape(&group.label),
            error = escape(&group.error),
            kind = escape(kind),
            n = group.count,
            first = escape(&group.first_seen),
            last = escape(&group.last_seen),
            actions = group_actions(console, "group", &group.group, &what),
        );
    }
    if summary.by_group.is_empty() {
        rows.push_str(r#"<tr><td colspan="7">No dead letters.</td></tr>"#);
    }
    let more = summary.by_group.len().saturating_sub(GROUPS_SHOWN);
    let more = if more > 0 {
        format!(r#"<p class="hint">{more} smaller groups not shown.</p>"#)
    } else {
        String::new()
    };
    format!(
        r#"<h2>Failure groups</h2><p class="hint">Dead letters with the same error kind, type and detail (ids and numbers aside).</p><table class="grid" id="groups"><thead><tr><th>Cause</th><th>Error</th><th>Type</th><th class="num">Count</th><th>First seen</th><th>Last seen</th><th></th></tr></thead><tbody>{rows}</tbody></table>{more}"#
    )
}

/// Replay and purge of every dead letter whose `field` (`error`, `type`, `group`) is `key`.
fn group_actions(console: &Console, field: &str, key: &str, what: &str) -> String {
    let replay = layout::action(
        "/ui/dlq/replay",
        &[(field, key)],
        "Replay all",
        "small",
        Some(&format!("Replay all {what}?")),
        &console.form_token,
    );
    let purge = layout::action(
        "/ui/dlq/purge",
        &[(field, key)],
        "Purge all",
        "small danger",
        Some(&format!("Purge all {what}? They are gone for good.")),
        &console.form_token,
    );
    format!("{replay}{purge}")
}
