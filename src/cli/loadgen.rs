//! `loadgen`: publish realistic traffic to a running worker and report throughput and
//! latency (`--report FILE.html` adds charts); exits non-zero when a completion is
//! missing, so CI can gate on it.

use crate::config::LoadgenArgs;
use crate::tools::charts;
use crate::tools::loadgen::{self, LoadgenConfig, Report};
use anyhow::{Context, bail};
use std::time::Duration;

pub async fn run(args: LoadgenArgs) -> anyhow::Result<Report> {
    let config = config(&args)?;
    let report = loadgen::run(config, !args.json).await?;
    if let Some(path) = &args.report {
        std::fs::write(path, charts::render(&report))
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{report}");
        println!("seed         {}  (--seed replays this mix)", report.seed);
    }
    if report.publish_failed > 0 {
        bail!(
            "{} messages were not accepted by the broker",
            report.publish_failed
        );
    }
    if report.missing > 0 {
        bail!(
            "{} of {} completions missing after {} s (e.g. {})",
            report.missing,
            report.expected,
            args.timeout_secs,
            report.missing_ids.first().map_or("", String::as_str)
        );
    }
    Ok(report)
}

/// What to publish, from the flags, validated (a random seed unless `--seed` is given).
fn config(args: &LoadgenArgs) -> anyhow::Result<LoadgenConfig> {
    let config = LoadgenConfig {
        amqp_url: args.amqp.amqp_url.clone(),
        exchange: args.amqp.exchange.clone(),
        count: args.count,
        rate: args.rate,
        save_ratio: args.save_ratio,
        gateway_id: args.gateway_id.clone(),
        timeout: Duration::from_secs(args.timeout_secs),
        seed: args.seed.unwrap_or_else(rand::random),
    };
    config.validate()?;
    Ok(config)
}
