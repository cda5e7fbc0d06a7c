//! `loadgen --report FILE.html`: the run as one self-contained page — inline CSS, charts
//! drawn here as inline SVG, no script, nothing fetched — with throughput and latency
//! percentiles second by second, the outcome mix, and the figures the text report prints.

mod bar;

use super::loadgen::{Report, TimelinePoint};
use crate::html::{LineChart, Series, escape, line_chart};
use bar::{Bar, bar_chart};
use std::fmt::Write as _;

const STYLE: &str = r#"
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2933; background: #f5f7fa; }
header { background: #102a43; color: #fff; padding: 14px 28px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 2px 0 0; color: #9fb3c8; font-size: 13px; }
main { max-width: 1040px; margin: 0 auto; padding: 12px 28px 40px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
.verdict { padding: 8px 12px; border-radius: 6px; background: #fff; border-left: 4px solid #15803d; margin: 12px 0; }
.verdict.bad { border-left-color: #b91c1c; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 10px 14px; }
.card .label { color: #616e7c; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 24px; font-weight: 650; }
.card .value small { font-size: 13px; font-weight: 500; color: #616e7c; }
.panel { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 8px; margin: 12px 0; }
.panel svg { max-width: 100%; height: auto; display: block; }
table { border-collapse: collapse; background: #fff; border: 1px solid #e4e7eb; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e4e7eb; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #102a43; color: #e6f0ff; padding: 12px 16px; border-radius: 8px; overflow-x: auto; font: 12.5px/1.45 ui-monospace, Menlo, Consolas, monospace; }
.hint { color: #616e7c; }
"#;

/// The whole page.
pub fn render(report: &Report) -> String {
    let step = report.timeline_step_secs.max(1);
    let verdict = if report.is_complete() {
        r#"<p class="verdict" data-complete="true">Every expected completion arrived.</p>"#
            .to_owned()
    } else {
        format!(
            r#"<p class="verdict bad" data-complete="false">{} of {} completions missing; {} messages not published.</p>"#,
            report.missing, report.expected, report.publish_failed
        )
    };
    let mut body = String::new();
    body.push_str(&verdict);
    body.push_str(&cards(report));
    let _ = write!(
        body,
        r#"<h2>Over time</h2><p class="hint">One point per {step} s from the first publish ({n} points). Completions are messages answered by an event: placed orders without the save flag have none by design.</p><div class="panel">{throughput}</div><div class="panel">{latency}</div>"#,
        n = report.timeline.len(),
        throughput = throughput_chart(report, step),
        latency = latency_chart(report),
    );
    let _ = write!(
        body,
        r#"<h2>Outcomes</h2><div class="panel">{}</div>{}"#,
        outcome_chart(report),
        published_table(report)
    );
    let _ = write!(
        body,
        "<h2>As printed</h2><pre>{}</pre>",
        escape(&report.to_string())
    );
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Load test {run} · wallet-worker</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>wallet-worker load test</h1><p>run <code>{run}</code> · seed {seed} · written {at}</p></header>
<main>
{body}
</main>
</body>
</html>
"#,
        run = escape(&report.run_id),
        seed = report.seed,
        at = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

fn cards(report: &Report) -> String {
    let l = report.latency_ms;
    let card = |label: &str, value: String| {
        format!(
            r#"<div class="card"><div class="label">{label}</div><div class="value">{value}</div></div>"#
        )
    };
    [
        r#"<div class="cards">"#.to_owned(),
        card(
            "Published",
            format!(
                "{}<small> in {:.1} s</small>",
                report.published, report.publish_seconds
            ),
        ),
        card(
            "Completed",
            format!(
                "{}<small> of {}</small>",
                report.completed_total, report.expected
            ),
        ),
        card(
            "Throughput",
            format!("{:.1}<small> /s</small>", report.throughput_per_sec),
        ),
        card("Latency p50", format!("{}<small> ms</small>", l.p50)),
        card("Latency p99", format!("{}<small> ms</small>", l.p99)),
        card("Latency max", format!("{}<small> ms</small>", l.max)),
        "</div>".to_owned(),
    ]
    .concat()
}

fn throughput_chart(report: &Report, step: u64) -> String {
    let per_second = |n: u64| n as f64 / step as f64;
    let chart = LineChart {
        id: "throughput",
        title: "Throughput: messages confirmed and completions received per second",
        x_label: "seconds since the first publish",
        y_label: "per second",
        width: 980,
        height: 280,
        dots: true,
        x_range: None,
        series: vec![
            Series {
                name: "published",
                color: "#94a3b8",
                points: report
                    .timeline
                    .iter()
                    .map(|p| (p.second as f64, per_second(p.published)))
                    .collect(),
            },
            Series {
                name: "completed",
                color: "#2563eb",
                points: report
                    .timeline
                    .iter()
                    .map(|p| (p.second as f64, per_second(p.completed)))
                    .collect(),
            },
        ],
    };
    line_chart(&chart)
}

fn latency_chart(report: &Report) -> String {
    let series = |name, color, pick: fn(&TimelinePoint) -> Option<f64>| Series {
        name,
        color,
        points: report
            .timeline
            .iter()
            .filter_map(|p| pick(p).map(|ms| (p.second as f64, ms)))
            .collect(),
    };
    let chart = LineChart {
        id: "latency",
        title: "Latency, publish to completion event, of each second's completions",
        x_label: "seconds since the first publish",
        y_label: "milliseconds",
        width: 980,
        height: 280,
        dots: true,
        x_range: None,
        series: vec![
            series("p50", "#16a34a", |p| p.p50_ms),
            series("p95", "#f59e0b", |p| p.p95_ms),
            series("p99", "#dc2626", |p| p.p99_ms),
        ],
    };
    line_chart(&chart)
}

fn outcome_chart(report: &Report) -> String {
    let mut bars: Vec<Bar<'_>> = report
        .completed
        .iter()
        .map(|(kind, n)| Bar {
            label: kind.clone(),
            value: *n as f64,
            color: outcome_color(kind),
        })
        .collect();
    bars.push(Bar {
        label: "no event by design".to_owned(),
        value: report.unacknowledged_by_design as f64,
        color: "#94a3b8",
    });
    for (label, n, color) in [
        ("missing", report.missing, "#b91c1c"),
        ("not published", report.publish_failed, "#7f1d1d"),
        ("duplicates", report.duplicates, "#b45309"),
    ] {
        if n > 0 {
            bars.push(Bar {
                label: label.to_owned(),
                value: n as f64,
                color,
            });
        }
    }
    let mut out = bar_chart(
        "outcomes",
        "Outcome mix: completion events by type",
        &bars,
        980,
    );
    if !report.refusals.is_empty() {
        out.push_str("<table><thead><tr><th>Refusal</th><th>Count</th></tr></thead><tbody>");
        for (refusal, n) in &report.refusals {
            let _ = write!(
                out,
                r#"<tr><td>{}</td><td class="num">{n}</td></tr>"#,
                escape(refusal)
            );
        }
        out.push_str("</tbody></table>");
    }
    out
}

fn outcome_color(kind: &str) -> &'static str {
    match kind {
        "wallet.dead_lettered" => "#b91c1c",
        k if k.ends_with("rejected") || k.ends_with("failed") => "#f59e0b",
        _ => "#16a34a",
    }
}

fn published_table(report: &Report) -> String {
    let mut out = "<h2>Published by type</h2><table><tbody>".to_owned();
    for (kind, n) in &report.published_by_type {
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td class="num">{n}</td></tr>"#,
            escape(kind)
        );
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_self_contained_and_draws_every_second() {
        let point = |second, published, completed, p50: Option<f64>| TimelinePoint {
            second,
            published,
            completed,
            p50_ms: p50,
            p95_ms: p50.map(|v| v * 2.0),
            p99_ms: p50.map(|v| v * 3.0),
        };
        let report = Report {
            run_id: "lg-<x>".into(),
            seed: 1,
            published: 3,
            published_by_type: [("order.placed".to_owned(), 3)].into(),
            publish_failed: 0,
            expected: 2,
            completed_total: 2,
            completed: [("wallet.saved".to_owned(), 2)].into(),
            missing: 0,
            missing_ids: Vec::new(),
            unacknowledged_by_design: 1,
            saved_created: 2,
            saved_reused: 0,
            refusals: Default::default(),
            duplicates: 0,
            publish_seconds: 1.0,
            window_seconds: 2.0,
            throughput_per_sec: 1.0,
            latency_ms: Default::default(),
            timeline: vec![
                point(0, 2, 0, None),
                point(1, 1, 1, Some(5.0)),
                point(2, 0, 1, Some(7.0)),
            ],
            timeline_step_secs: 1,
            saved_sources: Vec::new(),
        };
        let page = render(&report);
        assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
        assert!(page.contains("lg-&lt;x&gt;"));
        assert_eq!(page.matches("<circle").count(), 3 * 2 + 2 * 3);
        assert!(page.contains(r#"data-label="wallet.saved" data-value="2""#));
    }
}
