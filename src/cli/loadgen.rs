//! `loadgen`: publish realistic traffic to a running worker and report throughput and
//! latency; exits non-zero when a completion is missing, so CI can gate on it.

use crate::config::LoadgenArgs;
use crate::loadgen::{self, LoadgenConfig, Report};
use anyhow::bail;

pub async fn run(args: LoadgenArgs) -> anyhow::Result<Report> {
    let config = LoadgenConfig::from_args(&args)?;
    let report = loadgen::run(config, !args.json).await?;
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
