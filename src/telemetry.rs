//! Logging and tracing. Logs are JSON lines by default, human-readable with
//! `WALLET_LOG_FORMAT=pretty`. W3C trace context is always propagated
//! ([`propagation`]); spans are exported over OTLP/HTTP (protobuf) only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
//! without it no tracer is installed and spans cost what they did before. Errors are
//! logged with their causes ([`crate::error_chain::ErrorChain`]).

pub mod propagation;

use crate::error_chain::ErrorChain;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::time::Duration;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The OpenTelemetry variables that turn span export on (their standard meaning).
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];
/// `service.name` of the exported spans, unless `OTEL_SERVICE_NAME` says otherwise.
const SERVICE_NAME: &str = "wallet-worker";
/// How long one export request may take, unless the standard variables say otherwise.
const OTLP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long exiting waits for buffered spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    Json,
    /// Multi-line, human-readable.
    Pretty,
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes it before the process exits.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (waiting at most a few seconds for an
    /// unreachable collector) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer
            && let Err(err) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(error = %ErrorChain(&err), "could not flush the spans to the OTLP endpoint");
        }
    }
}

/// Installs the global subscriber (once; later calls are ignored). Logs go to stderr so
/// that CLI output on stdout stays clean for scripts. `default_filter` applies when
/// `RUST_LOG` is unset: `info` for long-running commands, quieter for one-shot ones
/// (whose result is their one line of output). With `export_spans` (long-running
/// commands) and an OTLP endpoint configured, the worker's own spans at `info` and
/// above are exported whatever `RUST_LOG` says: it picks log lines, not traces.
pub fn init(format: LogFormat, default_filter: &str, export_spans: bool) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => logs.pretty().boxed(),
    };
    let (tracer, failure) = match export_spans.then(otlp_tracer).flatten() {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(err)) => (None, Some(err)),
        None => (None, None),
    };
    // Only the worker's own spans (and their events): library internals are noise in
    // a trace, and the exporter's own diagnostics must not feed back into it.
    let spans = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            .with_filter(Targets::new().with_target("wallet_worker", Level::INFO))
    });
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans)
        .try_init();
    if let Some(err) = failure {
        tracing::warn!(error = %ErrorChain(&err), "OTLP span export is off: the exporter could not be set up");
    }
    Telemetry { tracer }
}

/// The tracer provider exporting to the configured OTLP/HTTP endpoint, or `None` when
/// no endpoint is configured.
fn otlp_tracer() -> Option<Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError>> {
    let configured = ENDPOINT_VARS
        .iter()
        .any(|var| std::env::var(var).is_ok_and(|value| !value.trim().is_empty()));
    if !configured {
        return None;
    }
    // The endpoint, headers, timeout and compression come from the standard
    // `OTEL_EXPORTER_OTLP_*` variables; `/v1/traces` is appended to the base endpoint.
    let exporter = match otlp_http_client() {
        Ok(client) => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .build(),
        Err(err) => Err(opentelemetry_otlp::ExporterBuildError::InternalFailure(
            format!("cannot build the HTTP client: {err}"),
        )),
    };
    Some(exporter.map(|exporter| {
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        // Batches go out from the SDK's own thread, off the async runtime.
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build()
    }))
}

/// The exporter's HTTP client, trusting what every other client of the process trusts
/// (`crate::tls`), with the standard OTLP timeout (10 s unless
/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` say otherwise, in
/// milliseconds). Built on a thread of its own: the blocking client runs a runtime of
/// its own, which cannot start inside the async one.
fn otlp_http_client() -> Result<reqwest::blocking::Client, String> {
    let timeout = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|var| std::env::var(var).ok()?.trim().parse().ok())
    .map_or(OTLP_TIMEOUT, Duration::from_millis);
    let tls = crate::tls::client_config();
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .build()
    })
    .join()
    .map_err(|_| "its set-up panicked".to_owned())?
    .map_err(|err| ErrorChain(&err).to_string())
}
