//! `GET /ui/dlq/list`: a page of dead letters matching the filters, oldest first, and a
//! link to the next page (keyset: it starts after this page's last row, so deep pages
//! cost what the first one does). One query: the page and one row more, which says
//! whether there is a next page.

use super::super::Console;
use super::super::layout::{self, Nav, Notice};
use crate::dead_letter_view::{self as view, or_dash};
use crate::error_chain::ErrorChain;
use crate::html::{escape, query_value};
use crate::store::dead_letters::{Cursor, DeadLetter, Filter, query, time_text};
use axum::extract::{Query, State};
use axum::response::Html;
use serde::Deserialize;
use std::fmt::Write as _;

/// Dead letters on a page unless `?limit=` says otherwise, and the most it may say.
const PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

/// `GET /ui/dlq/list?error=&type=&group=&order=&customer=&since=&until=&after=&limit=`.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    error: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    group: Option<String>,
    order: Option<String>,
    customer: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

impl ListQuery {
    /// The filter the query names; fields left empty in the form are no filter. A time
    /// that is not RFC 3339 is no filter either (the form shows what was understood).
    fn filter(&self) -> Filter {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let time = |v: &Option<String>| {
            let text = given(v)?;
            chrono::DateTime::parse_from_rfc3339(text.trim())
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        Filter {
            error: given(&self.error),
            kind: given(&self.kind),
            group: given(&self.group),
            order: given(&self.order),
            customer: given(&self.customer),
            since: time(&self.since),
            until: time(&self.until),
            ..Filter::default()
        }
    }
}

pub async fn list(
    State(console): State<Console>,
    Query(query): Query<ListQuery>,
    Query(notice): Query<Notice>,
) -> Html<String> {
    let filter = query.filter();
    let after = query.after.as_deref().and_then(Cursor::parse);
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let page = match console.admin.pool.acquire().await {
        Ok(mut conn) => {
            query::page(
                &mut conn,
                console.admin.keys.data_keys(),
                &filter,
                after.as_ref(),
                limit + 1,
            )
            .await
        }
        Err(err) => Err(err),
    };
    let body = match page {
        Ok(mut rows) => {
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let pager = pager(&filter, &rows, after.is_some(), more, limit);
            [filter_form(&filter), rows_html(&console, &rows), pager].concat()
        }
        Err(err) => {
            tracing::error!(
                error = %ErrorChain(&err),
                "console: cannot read the dead-letter store"
            );
            Notice::showing("database").html()
        }
    };
    let body = format!(r#"<p class="hint"><a href="/ui/dlq">Failure groups</a></p>{body}"#);
    layout::page("Dead letters: list", Nav::DeadLetters, &notice, &body)
}

fn filter_form(filter: &Filter) -> String {
    let field = |name: &str, label: &str, value: Option<String>| {
        format!(
            r#"<label>{label} <input name="{name}" value="{}" size="14"></label> "#,
            escape(&value.unwrap_or_default())
        )
    };
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(time_text);
    format!(
        r#"<form class="filters" method="get" action="/ui/dlq/list">{}{}{}{}{}{}{}<button type="submit">Filter</button> <a href="/ui/dlq/list">clear</a></form>"#,
        field("error", "Error", filter.error.clone()),
        field("type", "Type", filter.kind.clone()),
        field("group", "Group", filter.group.clone()),
        field("order", "Order", filter.order.clone()),
        field("customer", "Customer", filter.customer.clone()),
        field("since", "Since", time(filter.since)),
        field("until", "Until", time(filter.until)),
    )
}

fn rows_html(console: &Console, rows: &[DeadLetter]) -> String {
    let mut out = String::new();
    for letter in rows {
        let show = format!(
            r#"<a class="button small" href="/ui/dlq/show?id={}">Show</a>"#,
            letter.id
        );
        let buttons = letter.message_id.as_deref().map_or_else(String::new, |id| {
            layout::dead_letter_actions(id, true, &console.form_token)
        });
        let _ = write!(
            out,
            r#"<tr data-message-id="{id}" data-row="{row}"><td class="num">{row}</td><td><code>{id}</code></td><td>{kind}</td><td>{error}</td><td class="num">{attempts}</td><td>{at}</td><td class="num">{bytes}</td><td class="detail">{detail}</td><td class="actions">{show}{buttons}</td></tr>"#,
            id = escape(&or_dash(letter.message_id.as_deref())),
            row = letter.id,
            kind = escape(&or_dash(letter.routing_key.as_deref())),
            error = escape(&letter.error),
            attempts = view::attempts(letter),
            at = time_text(letter.dead_lettered_at),
            bytes = letter.body.len(),
            detail = escape(&letter.detail),
        );
    }
    if rows.is_empty() {
        out.push_str(r#"<tr><td colspan="9">No dead letters here.</td></tr>"#);
    }
    format!(
        r#"<table class="grid" id="dead-letters"><thead><tr><th class="num">Id</th><th>Message id</th><th>Type</th><th>Error</th><th class="num">Attempts</th><th>Dead-lettered at</th><th class="num">Bytes</th><th>Detail</th><th></th></tr></thead><tbody>{out}</tbody></table>"#
    )
}

/// "first page" when this is not it, "next" when there is one more.
fn pager(filter: &Filter, rows: &[DeadLetter], paged: bool, more: bool, limit: i64) -> String {
    let link = |after: Option<&Cursor>, text: &str| {
        let mut href = format!("/ui/dlq/list?limit={limit}");
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(time_text);
        for (name, value) in [
            ("error", filter.error.clone()),
            ("type", filter.kind.clone()),
            ("group", filter.group.clone()),
            ("order", filter.order.clone()),
            ("customer", filter.customer.clone()),
            ("since", time(filter.since)),
            ("until", time(filter.until)),
            ("after", after.map(Cursor::to_string)),
        ] {
            if let Some(value) = value {
                let _ = write!(href, "&{name}={}", query_value(&value));
            }
        }
        format!(
            r#"<a class="button small" href="{}">{text}</a>"#,
            escape(&href)
        )
    };
    let mut out = format!(
        r#"<p class="pager"><span data-shown="{}">{} shown</span> "#,
        rows.len(),
        rows.len()
    );
    if paged {
        out.push_str(&link(None, "← first page"));
    }
    if more && let Some(last) = rows.last() {
        out.push_str(&link(Some(&Cursor::of(last)), "next →"));
    }
    out.push_str("</p>");
    out
}
