//! The load-test report (`loadgen --report FILE.html`) opened in the same headless
//! browser: self-contained, and its charts hold one point per second of the run.

use crate::browser::Browser;
use crate::helpers::*;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wallet_worker::config::{AmqpArgs, LoadgenArgs};
use wallet_worker::domain::Secret;
use wallet_worker::tools::gateway_sim::{self as sim, SimConfig, SimStats};

/// Serves the gateway-sim on a free port and registers it as gateway `sim`.
async fn serve_sim(w: &TestWorker) -> CancellationToken {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let url = format!("http://{}/token", listener.local_addr().expect("address"));
    let config = SimConfig {
        latency: Duration::from_millis(2),
        error_rate: 0.0,
        secret: Secret::new(GATEWAY_SECRET),
    };
    let stop = CancellationToken::new();
    tokio::spawn(sim::serve_with_stats(
        listener,
        config,
        Arc::new(SimStats::default()),
        stop.clone().cancelled_owned(),
    ));
    register_gateway(&w.pool, "sim", &url).await;
    stop
}

/// The numbers in `data-y` of the points of one series, in order.
async fn drawn(browser: &Browser, chart: &str, series: &str) -> Vec<f64> {
    let script = format!(
        r#"return Array.from(document.querySelectorAll('svg[data-chart="{chart}"] g[data-series="{series}"] circle')).map(c => Number(c.dataset.y));"#
    );
    match browser.eval(&script).await {
        Value::Array(ys) => ys.iter().map(|y| y.as_f64().expect("a number")).collect(),
        other => panic!("not a list: {other}"),
    }
}

#[tokio::test]
async fn console_loadgen_report_draws_every_second_of_the_run_in_a_browser() {
    let w = spawn_worker().await;
    let stop_sim = serve_sim(&w).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("loadgen-report.html");
    let args = LoadgenArgs {
        amqp: AmqpArgs {
            amqp_url: AMQP_URL.into(),
            exchange: w.args.amqp.exchange.clone(),
            queue: w.args.amqp.queue.clone(),
        },
        count: 500,
        rate: Some(50.0),
        save_ratio: 0.5,
        gateway_id: "sim".into(),
        timeout_secs: 60,
        json: true,
        seed: Some(7),
        report: Some(path.clone()),
    };
    let report = wallet_worker::cli::loadgen::run(args)
        .await
        .expect("loadgen succeeds");
    let timeline = &report.timeline;
    assert_eq!(report.timeline_step_secs, 1);
    assert!(timeline.len() >= 10, "{} seconds", timeline.len());
    let published: Vec<f64> = timeline.iter().map(|p| p.published as f64).collect();
    let completed: Vec<f64> = timeline.iter().map(|p| p.completed as f64).collect();
    assert_eq!(published.iter().sum::<f64>(), report.published as f64);
    assert_eq!(completed.iter().sum::<f64>(), report.completed_total as f64);
    let html = std::fs::read_to_string(&path).expect("the report was written");
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));

    let browser = Browser::start().await;
    browser.goto(&format!("file://{}", path.display())).await;
    browser.find(r#"svg[data-chart="throughput"]"#).await;
    assert_eq!(drawn(&browser, "throughput", "published").await, published);
    assert_eq!(drawn(&browser, "throughput", "completed").await, completed);
    let answered: Vec<f64> = timeline.iter().filter_map(|p| p.p99_ms).collect();
    assert!(!answered.is_empty());
    for percentile in ["p50", "p95", "p99"] {
        let css = format!(r#"svg[data-chart="latency"] g[data-series="{percentile}"] circle"#);
        assert_eq!(browser.count(&css).await, answered.len(), "{percentile}");
    }
    assert_eq!(drawn(&browser, "latency", "p99").await, answered);
    let on_screen = browser
        .eval("return Array.from(document.querySelectorAll('svg[data-chart] circle, svg[data-chart] path')).every(e => e.getBBox().width > 0 || e.getBBox().height > 0);")
        .await;
    assert_eq!(
        on_screen,
        Value::Bool(true),
        "every point and line is drawn"
    );
    let bars = browser
        .count(r#"svg[data-chart="outcomes"] rect[data-label]"#)
        .await;
    assert_eq!(
        bars,
        report.completed.len() + 1,
        "each event type, and no event by design"
    );
    let png = browser.screenshot("loadgen-report").await;
    assert!(png.len() < 300 * 1024, "screenshot of {} bytes", png.len());
    browser.close().await;
    stop_sim.cancel();
    w.stop().await;
}
