//! `gateway-sim`: serve the local token_url until SIGINT/SIGTERM.

use crate::config::GatewaySimArgs;
use crate::tools::gateway_sim::{self as sim, SimConfig};
use anyhow::{Context, bail};
use std::time::Duration;

pub async fn run(args: GatewaySimArgs) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        bail!(
            "--error-rate must be between 0 and 1, got {}",
            args.error_rate
        );
    }
    let secret = args.secret()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // One line people and scripts can read; `gateway set` wants exactly this URL.
    println!("gateway-sim listening on http://{addr}/token");
    let config = SimConfig {
        latency: Duration::from_millis(args.latency_ms),
        error_rate: args.error_rate,
        secret,
    };
    sim::serve(listener, config, crate::worker::shutdown_signal())
        .await
        .context("gateway-sim stopped")
}
