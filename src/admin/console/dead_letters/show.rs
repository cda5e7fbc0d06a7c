//! `GET /ui/dlq/show?id=`: the dead letters of one message id (one per life), or the
//! one of a row id, in full — what is known of it, properties, headers and body — with
//! every secret masked, and their actions.

use crate::admin::console::Console;
use crate::admin::console::layout::{self, Nav, Notice, or_dash};
use crate::dead_letter_view::{self as view, DisplayBody};
use crate::error_chain::ErrorChain;
use crate::html::escape;
use crate::store::dead_letters::{DeadLetter, query, time_text};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::fmt::Write as _;

/// `GET /ui/dlq/show?id=`.
#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    id: String,
}

pub async fn show(State(console): State<Console>, Query(query): Query<ShowQuery>) -> Response {
    let title = format!("Dead letter {}", query.id);
    let notice = Notice::default();
    let letters = match query::show(
        &console.admin.pool,
        console.admin.keys.data_keys(),
        &query.id,
    )
    .await
    {
        Ok(letters) => letters,
        Err(err) => {
            tracing::error!(
                error = %ErrorChain(&err),
                "console: cannot read the dead-letter store"
            );
            let body = Notice::showing("database").html();
            return layout::page(&title, Nav::DeadLetters, &notice, &body).into_response();
        }
    };
    if letters.is_empty() {
        let body = format!(
            r#"<p class="notice bad">No dead letter with message id or row id <code>{}</code> (it may have been purged).</p><p><a href="/ui/dlq">All dead letters</a></p>"#,
            escape(&query.id)
        );
        let page = layout::page(&title, Nav::DeadLetters, &notice, &body);
        return (StatusCode::NOT_FOUND, page).into_response();
    }
    let waiting = letters.iter().find(|l| l.replayed_at.is_none());
    let buttons = match waiting.and_then(|l| l.message_id.as_deref()) {
        Some(id) => layout::dead_letter_actions(id, false, &console.form_token),
        None => String::new(),
    };
    let mut body =
        format!(r#"<div class="actions">{buttons} <a href="/ui/dlq">All dead letters</a></div>"#);
    for letter in &letters {
        body.push_str(&letter_html(letter));
    }
    layout::page(&title, Nav::DeadLetters, &notice, &body).into_response()
}

fn letter_html(letter: &DeadLetter) -> String {
    let escaped = |pairs: std::collections::BTreeMap<String, String>| {
        pairs
            .into_iter()
            .map(|(name, value)| (name, escape(&value)))
            .collect()
    };
    let (body_title, body) = match view::body(letter, true) {
        DisplayBody::Text(text) => ("Body", text),
        DisplayBody::Base64(encoded) => ("Body (not UTF-8, base64)", encoded),
    };
    format!(
        r#"<section class="letter" data-row="{id}"><h2>Dead letter {id}</h2>{summary}<div class="two"><div><h3>Properties</h3>{properties}</div><div><h3>Headers</h3>{headers}</div></div><h3>{body_title}</h3><pre class="body" data-body>{body}</pre></section>"#,
        id = letter.id,
        summary = table(summary(letter)),
        properties = table(escaped(view::properties(letter))),
        headers = table(escaped(view::headers(letter))),
        body = escape(&body),
    )
}

/// A two-column table; names are escaped here, values must already be HTML.
fn table(rows: Vec<(String, String)>) -> String {
    let mut out = r#"<table class="kv"><tbody>"#.to_owned();
    for (name, value) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(&name), value);
    }
    out.push_str("</tbody></table>");
    out
}

/// The letter at a glance: ids, why, when, its failure group and whether it was
/// replayed (values as HTML).
fn summary(letter: &DeadLetter) -> Vec<(String, String)> {
    let replayed = match &letter.replayed_at {
        Some(at) => format!(
            "{} by {}",
            time_text(*at),
            or_dash(letter.replayed_by.as_deref())
        ),
        None => "no".to_owned(),
    };
    vec![
        (
            "message id".to_owned(),
            or_dash(letter.message_id.as_deref()),
        ),
        ("type".to_owned(), or_dash(letter.routing_key.as_deref())),
        ("error".to_owned(), escape(&letter.error)),
        ("detail".to_owned(), escape(&letter.detail)),
        ("attempts".to_owned(), view::attempts(letter)),
        (
            "dead-lettered at".to_owned(),
            time_text(letter.dead_lettered_at),
        ),
        ("stored at".to_owned(), time_text(letter.ingested_at)),
        (
            "failure group".to_owned(),
            format!(
                r#"<a href="/ui/dlq/list?group={g}"><code>{g}</code></a>"#,
                g = escape(&letter.group_key)
            ),
        ),
        ("order".to_owned(), or_dash(letter.order_id.as_deref())),
        (
            "customer".to_owned(),
            or_dash(letter.customer_id.as_deref()),
        ),
        ("replayed".to_owned(), escape(&replayed)),
        (
            "body size".to_owned(),
            format!("{} bytes", letter.body.len()),
        ),
    ]
}
