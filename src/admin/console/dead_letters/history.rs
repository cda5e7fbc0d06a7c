//! `GET /ui/dlq/history`: the latest replays and purges from the audit log — who, from
//! where, what they selected, how many, when, and whether they finished. One query.

use crate::admin::console::Console;
use crate::admin::console::layout::{self, Nav, Notice};
use crate::error_chain::ErrorChain;
use crate::html::escape;
use crate::store::audit;
use crate::store::dead_letters::time_text;
use axum::extract::State;
use axum::response::Html;
use std::fmt::Write as _;

/// Entries the page shows, newest first.
const SHOWN: i64 = 100;

pub async fn history(State(console): State<Console>) -> Html<String> {
    let notice = Notice::default();
    let entries = match audit::latest(&console.admin.pool, SHOWN).await {
        Ok(entries) => entries,
        Err(err) => {
            tracing::error!(
                error = %ErrorChain(&err),
                "console: cannot read the audit log"
            );
            let body = Notice::showing("database").html();
            return layout::page("History", Nav::History, &notice, &body);
        }
    };
    let mut rows = String::new();
    for entry in &entries {
        let finished = entry
            .finished_at
            .map_or_else(|| "interrupted or running".to_owned(), time_text);
        let _ = write!(
            rows,
            r#"<tr data-action="{action}" data-actor="{actor}"><td>{at}</td><td>{actor}</td><td>{via}</td><td><code>{action}</code></td><td><code>{target}</code></td><td class="num" data-count="{count}">{count}</td><td>{finished}</td></tr>"#,
            at = time_text(entry.at),
            actor = escape(&entry.actor),
            via = escape(&entry.via),
            action = escape(&entry.action),
            target = escape(&entry.target.to_string()),
            count = entry.count,
            finished = escape(&finished),
        );
    }
    if entries.is_empty() {
        rows.push_str(r#"<tr><td colspan="7">Nothing replayed or purged yet.</td></tr>"#);
    }
    let body = format!(
        r#"<p class="hint">Replays and purges of dead letters, from the console and the <code>dlq</code> command, newest first. <a href="/ui/dlq">Failure groups</a></p><table class="grid" id="history"><thead><tr><th>When</th><th>Who</th><th>From</th><th>Action</th><th>Selection</th><th class="num">Dead letters</th><th>Finished</th></tr></thead><tbody>{rows}</tbody></table>"#
    );
    layout::page("History", Nav::History, &notice, &body)
}
