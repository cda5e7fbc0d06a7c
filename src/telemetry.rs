//! Logging: JSON lines by default, human-readable with `WALLET_LOG_FORMAT=pretty`.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls are ignored). Logs go to stderr so
/// that CLI output on stdout stays clean for scripts. `default_filter` applies when
/// `RUST_LOG` is unset: `info` for long-running commands, quieter for one-shot ones
/// (whose result is their one line of output).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.pretty().try_init(),
    };
}
