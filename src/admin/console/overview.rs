//! The overview: is the worker ready, how fast and how well is it handling each message
//! type, what is waiting (in flight, outbox, dead letters), and the gateways with their
//! circuits. `/ui/live` is the refreshing part alone, for `console.js`.

use super::auth;
use super::layout::{self, Nav, Notice};
use super::live::Live;
use super::{Console, forbidden};
use crate::error_chain::ErrorChain;
use crate::gateway::shown_token_url;
use crate::html::{LineChart, Series, escape, line_chart};
use crate::store::audit::{self, Via};
use crate::store::dead_letters::gauge;
use crate::store::{self, gateways};
use axum::Form;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::fmt::Write as _;

pub async fn page(State(console): State<Console>, Query(notice): Query<Notice>) -> Html<String> {
    let body = format!(
        r#"<section id="live" data-refresh="/ui/live" aria-live="polite">{}</section>"#,
        live_html(&console).await
    );
    layout::page("Overview", Nav::Overview, &notice, &body)
}

pub async fn live(State(console): State<Console>) -> Html<String> {
    Html(live_html(&console).await)
}

async fn live_html(console: &Console) -> String {
    let live = console.live.now();
    let mut out = status(console).await;
    // Read from the store at each refresh (one small query), not from a sampled gauge.
    let waiting = gauge::by_kind(&console.admin.pool)
        .await
        .ok()
        .map(|counts| counts.values().sum::<i64>());
    out.push_str(&cards(&live, waiting));
    out.push_str(&throughput_chart(&live));
    out.push_str(&by_type(&live));
    out.push_str(&gateways_html(console).await);
    out
}

/// Ready or not, and why, as `/readyz` would say.
async fn status(console: &Console) -> String {
    let admin = &console.admin;
    let node = admin.broker.node();
    let database = store::ping(&admin.pool).await;
    let failure = admin.supervisor.failure();
    let ready = node.is_some() && database && failure.is_none();
    let (class, word) = if ready {
        ("ok", "Ready")
    } else {
        ("bad", "Not ready")
    };
    let broker = node.map_or_else(
        || "broker: disconnected".to_owned(),
        |node| format!("broker: {}", escape(&node)),
    );
    let database = if database {
        "database: up"
    } else {
        "database: not answering"
    };
    let failure = failure.map_or_else(String::new, |f| format!(" · {}", escape(&f)));
    format!(
        r#"<p class="status {class}" data-ready="{ready}"><b>{word}</b> · {broker} · {database}{failure}</p>"#
    )
}

/// The figures; `waiting` is the dead letters in the store (`None`: unknown).
fn cards(live: &Live, waiting: Option<i64>) -> String {
    let number = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let stored = waiting.map_or_else(|| "-".to_owned(), |n| n.to_string());
    let depth = number(live.dlq_depth);
    let written: u64 = live.dead_letters.iter().map(|(_, n)| n).sum();
    let card = |id: &str, label: &str, value: &str, note: &str| {
        format!(
            r#"<div class="card" data-card="{id}"><div class="label">{label}</div><div class="value">{value}</div><div class="note">{note}</div></div>"#
        )
    };
    [
        r#"<div class="cards">"#.to_owned(),
        card(
            "throughput",
            "Throughput",
            &format!("{:.1}<small> msg/s</small>", live.rate),
            &format!("settled, last {:.0} s", live.span_secs),
        ),
        card(
            "in-flight",
            "In flight",
            &format!("{:.0}", live.in_flight),
            "deliveries being handled",
        ),
        card(
            "outbox",
            "Outbox backlog",
            &format!("{:.0}", live.outbox_backlog),
            "events not yet confirmed",
        ),
        card(
            "dead-letters",
            "Dead letters",
            &format!(r#"<a href="/ui/dlq">{stored}</a>"#),
            &format!(
                "waiting in the store · {depth} in the intake · {written} written since start"
            ),
        ),
        "</div>".to_owned(),
    ]
    .concat()
}

fn throughput_chart(live: &Live) -> String {
    let chart = LineChart {
        id: "live-throughput",
        title: "Messages settled per second, last two minutes",
        x_label: "seconds ago",
        y_label: "msg/s",
        width: 1130,
        height: 170,
        dots: false,
        x_range: Some((-120.0, 0.0)),
        series: vec![Series {
            name: "settled",
            color: "#2563eb",
            points: live.throughput.clone(),
        }],
    };
    format!(r#"<div class="panel">{}</div>"#, line_chart(&chart))
}

fn by_type(live: &Live) -> String {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let mut rows = String::new();
    for t in &live.by_type {
        let mut outcomes = String::new();
        for (outcome, n) in &t.outcomes {
            let _ = write!(
                outcomes,
                r#"<span class="outcome {class}" data-outcome="{o}" data-count="{n}">{o} <b>{n}</b></span> "#,
                class = outcome_class(outcome),
                o = escape(outcome),
            );
        }
        let _ = write!(
            rows,
            r#"<tr data-type="{kind}"><td><code>{kind}</code></td><td class="num">{rate:.1}</td><td class="num">{p50}</td><td class="num">{p95}</td><td class="num">{p99}</td><td>{outcomes}</td></tr>"#,
            kind = escape(&t.kind),
            rate = t.rate,
            p50 = ms(t.p50),
            p95 = ms(t.p95),
            p99 = ms(t.p99),
        );
    }
    format!(
        r#"<h2>By message type</h2><p class="hint">Rates and latency (delivery to settlement) over the last {span:.0} s; outcomes since the worker started.</p>
<table class="grid" id="by-type"><thead><tr><th>Type</th><th class="num">msg/s</th><th class="num">p50 ms</th><th class="num">p95 ms</th><th class="num">p99 ms</th><th>Outcomes</th></tr></thead><tbody>{rows}</tbody></table>"#,
        span = live.span_secs,
    )
}

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "dead_lettered" => "bad",
        "retry_scheduled" | "retry_pending" => "warn",
        o if o.ends_with("rejected") || o.ends_with("failed") => "warn",
        _ => "ok",
    }
}

async fn gateways_html(console: &Console) -> String {
    let listing = match gateways::list(&console.admin.pool).await {
        Ok(listing) => listing,
        Err(err) => {
            tracing::warn!(error = %ErrorChain(&err), "console: cannot list gateways");
            return r#"<h2>Gateways</h2><p class="notice bad">The database did not answer.</p>"#
                .to_owned();
        }
    };
    let mut rows = String::new();
    for g in &listing {
        let until = g.circuit_open_until.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        let reset = layout::action(
            "/ui/gateways/reset",
            &[("id", &g.id)],
            "Reset circuit",
            "small",
            None,
            &console.form_token,
        );
        let _ = write!(
            rows,
            r#"<tr data-gateway="{id}"><td><code>{id}</code></td><td>{url}</td><td>{enabled}</td><td><span class="badge {circuit}" data-circuit="{circuit}">{circuit}</span></td><td class="num">{failures}</td><td>{until}</td><td>{reset}</td></tr>"#,
            id = escape(&g.id),
            url = escape(&shown_token_url(&g.token_url)),
            enabled = if g.enabled { "yes" } else { "no" },
            circuit = g.circuit,
            failures = g.consecutive_failures,
        );
    }
    if listing.is_empty() {
        rows.push_str(r#"<tr><td colspan="7">No gateway registered (<code>wallet-worker gateway set</code>).</td></tr>"#);
    }
    format!(
        r#"<h2>Gateways</h2><table class="grid" id="gateways"><thead><tr><th>Gateway</th><th>token_url</th><th>Enabled</th><th>Circuit</th><th class="num">Failures in a row</th><th>Open until</th><th></th></tr></thead><tbody>{rows}</tbody></table>"#
    )
}

/// `POST /ui/gateways/reset`.
#[derive(Debug, Deserialize)]
pub struct ResetForm {
    id: String,
    form_token: String,
}

pub async fn reset_circuit(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<ResetForm>,
) -> Response {
    if !console.form_is_ours(&form.form_token) {
        return forbidden();
    }
    let pool = &console.admin.pool;
    let notice = match gateways::reset_circuit(pool, &form.id).await {
        Ok(true) => {
            let actor = auth::user_name(&headers);
            let target = serde_json::json!({ "gateway": form.id });
            let action = "gateway.reset_circuit";
            if let Err(err) = audit::record(pool, &actor, Via::Console, action, &target, 1).await {
                tracing::error!(error = %ErrorChain(&err), actor, "console: the circuit reset is not in the audit log");
            }
            Notice::done("reset", 1, 0)
        }
        Ok(false) => Notice::problem("unknown_gateway"),
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "console: cannot reset the circuit");
            Notice::problem("database")
        }
    };
    Redirect::to(&format!("/ui/?{notice}")).into_response()
}
