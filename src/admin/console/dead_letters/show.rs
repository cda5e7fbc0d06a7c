//! `GET /ui/dlq/show?id=`: the dead letters with one message id, in full — summary,
//! properties, headers and body — with every secret masked, and their actions.

use super::{Problem, close, connect};
use crate::admin::console::Console;
use crate::admin::console::layout::{self, Nav, Notice, or_dash};
use crate::broker::dlq::{self, DeadLetterEntry, DisplayBody, SECRET_FIELDS};
use crate::html::escape;
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
    let shown = match connect(&console).await {
        Ok(connection) => {
            let shown = dlq::show(&connection, &console.admin.topology, &query.id).await;
            close(connection).await;
            shown.map_err(Problem::from)
        }
        Err(problem) => Err(problem),
    };
    let title = format!("Dead letter {}", query.id);
    let notice = Notice::default();
    let shown = match shown {
        Ok(shown) => shown,
        Err(problem) => {
            let body = Notice::showing(problem.code()).html();
            return layout::page(&title, Nav::DeadLetters, &notice, &body).into_response();
        }
    };
    if shown.entries.is_empty() {
        let body = format!(
            r#"<p class="notice bad">No dead letter with message id <code>{}</code> (it may have been replayed or purged).</p><p><a href="/ui/dlq">All dead letters</a></p>"#,
            escape(&query.id)
        );
        let page = layout::page(&title, Nav::DeadLetters, &notice, &body);
        return (StatusCode::NOT_FOUND, page).into_response();
    }
    let id = query.id.as_str();
    let mut body = format!(
        r#"<div class="actions">{buttons} <a href="/ui/dlq">All dead letters</a></div>"#,
        buttons = layout::dead_letter_actions(id, false, &console.form_token),
    );
    for entry in &shown.entries {
        body.push_str(&entry_html(entry, shown.depth));
    }
    if shown.more > 0 {
        let _ = write!(
            body,
            r#"<p class="hint">{} more with this message id.</p>"#,
            shown.more
        );
    }
    layout::page(&title, Nav::DeadLetters, &notice, &body).into_response()
}

fn entry_html(entry: &DeadLetterEntry, depth: u64) -> String {
    let table = |rows: Vec<(String, String)>| {
        let mut out = r#"<table class="kv"><tbody>"#.to_owned();
        for (name, value) in rows {
            let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", escape(&name), value);
        }
        out.push_str("</tbody></table>");
        out
    };
    let summary = vec![
        ("message id".to_owned(), escape(&entry.message_id)),
        ("type".to_owned(), or_dash(entry.routing_key.as_deref())),
        ("error".to_owned(), or_dash(entry.error.as_deref())),
        ("detail".to_owned(), or_dash(entry.error_detail.as_deref())),
        (
            "attempts".to_owned(),
            entry
                .attempts
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ),
        (
            "dead-lettered at".to_owned(),
            or_dash(entry.dead_lettered_at.as_deref()),
        ),
        (
            "body size".to_owned(),
            format!("{} bytes", entry.body_size()),
        ),
    ];
    let properties = entry
        .property_texts()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), escape(&value)))
        .collect();
    let headers = entry
        .headers()
        .into_iter()
        .map(|(name, value)| {
            let value = if secret_header(&name) {
                "[redacted]".to_owned()
            } else {
                escape(&value)
            };
            (name, value)
        })
        .collect();
    let (body_title, body) = match entry.display_body(true) {
        DisplayBody::Text(text) => ("Body", text),
        DisplayBody::Base64(encoded) => ("Body (not UTF-8, base64)", encoded),
    };
    format!(
        r#"<section class="letter" data-position="{position}"><h2>Dead letter {position} of {depth}</h2>{summary}<div class="two"><div><h3>Properties</h3>{properties}</div><div><h3>Headers</h3>{headers}</div></div><h3>{body_title}</h3><pre class="body" data-body>{body}</pre></section>"#,
        position = entry.position,
        summary = table(summary),
        properties = table(properties),
        headers = table(headers),
        body = escape(&body),
    )
}

/// Headers whose value is shown masked: the body's secret field names, and anything
/// that names itself a token, secret, password or authorization.
fn secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_FIELDS.iter().any(|field| name.contains(field))
        || ["token", "secret", "password", "authorization"]
            .iter()
            .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_headers_are_masked() {
        assert!(secret_header("x-payment_source_token"));
        assert!(secret_header("X-Api-Secret"));
        assert!(!secret_header("x-wallet-error"));
        assert!(!secret_header("traceparent"));
    }
}
