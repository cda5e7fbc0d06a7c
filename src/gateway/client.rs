//! `GatewayClient`: the signed, bounded, retried POST to a gateway's `token_url`
//! (docs/interface.md, the token_url call).

use super::request::{GatewayTarget, SaveRequest};
use super::response::{self, GatewayError, Tokens};
use super::signature::sign;
use crate::telemetry::propagation;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::redirect::{Attempt, Policy};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Redirects followed at most, and only within the same origin (see [`redirect_policy`]).
const MAX_REDIRECTS: usize = 3;
/// A `Retry-After` longer than this ends the in-process retries: the error (with its
/// `retry_after`) goes back to the caller, whose delayed retry holds no consumer slot.
pub const MAX_IN_PROCESS_WAIT: Duration = Duration::from_secs(5);

/// Timeouts and the quick in-process retry budget.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// The whole call, answer body included.
    pub request_timeout: Duration,
    /// Retries after the first call, on transient errors only.
    pub quick_retries: usize,
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            quick_retries: 3,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
        }
    }
}

/// One per process: it owns the connection pool shared by all gateway calls.
#[derive(Debug, Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    settings: ClientSettings,
}

/// The bytes, signature and key of one save, computed once and reused by every attempt.
struct Prepared {
    body: Vec<u8>,
    signature: String,
    key: String,
}

impl GatewayClient {
    /// Fails only when the TLS backend cannot be initialised. https token_urls are
    /// verified against the process's trust (`crate::tls`).
    pub fn new(settings: ClientSettings) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(Policy::custom(redirect_policy))
            // Many concurrent saves usually go to a handful of gateways: keep warm
            // connections to each instead of a TLS handshake per call.
            .pool_max_idle_per_host(128)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("wallet-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, settings })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// One call plus up to `quick_retries` retries on transient errors (exponential
    /// backoff with jitter, at least `Retry-After`), all with the same bytes and
    /// Idempotency-Key. A refusal is returned at once.
    pub async fn save(
        &self,
        target: &GatewayTarget,
        req: &SaveRequest<'_>,
    ) -> Result<Tokens, GatewayError> {
        let prepared = Prepared::new(target, req);
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_max)
            .with_max_times(self.settings.quick_retries);
        let mut attempt = 0;
        (|| {
            attempt += 1;
            self.attempt(target, req, &prepared, attempt)
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(GatewayError::is_transient)
        .adjust(|error, delay| match (delay, error.retry_after()) {
            (_, Some(wait)) if wait > MAX_IN_PROCESS_WAIT => None,
            (Some(delay), wait) => Some(wait.map_or(delay, |w| w.max(delay))),
            (None, _) => None,
        })
        .await
    }

    /// Exactly one call, for callers that schedule their own retries.
    pub async fn save_once(
        &self,
        target: &GatewayTarget,
        req: &SaveRequest<'_>,
    ) -> Result<Tokens, GatewayError> {
        self.attempt(target, req, &Prepared::new(target, req), 1)
            .await
    }

    async fn attempt(
        &self,
        target: &GatewayTarget,
        req: &SaveRequest<'_>,
        prepared: &Prepared,
        attempt: usize,
    ) -> Result<Tokens, GatewayError> {
        let started = Instant::now();
        let span =
            tracing::info_span!("token_url", otel.kind = "client", gateway = %target.id, attempt);
        let sent = self.send(target, prepared).instrument(span).await;
        let (status, result) = match sent {
            Ok(response) => {
                let status = response.status().as_u16().to_string();
                (status, response::interpret(&target.id, response).await)
            }
            Err(error) => (
                "error".to_owned(),
                Err(response::transport_error(&target.id, &error)),
            ),
        };
        ::metrics::counter!(crate::metrics::GATEWAY_CALLS, "gateway" => target.id.clone(), "status" => status)
            .increment(1);
        ::metrics::histogram!(crate::metrics::GATEWAY_SECONDS, "gateway" => target.id.clone())
            .record(started.elapsed().as_secs_f64());
        result.map_err(|error| {
            let error = error.scrubbed(&[req.payment.token.expose(), target.secret.expose()]);
            // A refusal is a business answer (a declined card), not a malfunction.
            if error.is_transient() {
                tracing::warn!(gateway = %target.id, attempt, error = %error, "gateway call failed");
            } else {
                tracing::info!(gateway = %target.id, attempt, error = %error, "gateway refused");
            }
            error
        })
    }

    /// The POST itself, carrying the current trace context onward (docs/interface.md, trace context): the
    /// `token_url` span's when spans are exported, else the delivery's inbound one.
    async fn send(
        &self,
        target: &GatewayTarget,
        prepared: &Prepared,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(target.token_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header("Idempotency-Key", prepared.key.as_str())
            .header("X-CommerceLayer-Signature", prepared.signature.as_str());
        if let Some(trace) = propagation::current() {
            for (name, value) in trace.headers() {
                request = request.header(name, value);
            }
        }
        request.body(prepared.body.clone()).send().await
    }
}

impl Prepared {
    fn new(target: &GatewayTarget, req: &SaveRequest<'_>) -> Self {
        let body = req.body();
        let signature = sign(&body, &target.secret);
        Self {
            body,
            signature,
            key: req.idempotency_key(),
        }
    }
}

/// Follows only 307/308 (which keep the method and the signed body; 301/302/303 would
/// turn the POST into a bodiless GET), within the same origin (so the signed card data
/// never goes to another host, nor over plain http), at most [`MAX_REDIRECTS`] times.
/// Anything else comes back as a 3xx, which is refused: a token_url that moved is a
/// configuration problem, not a transient one.
fn redirect_policy(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    let keeps_body = matches!(attempt.status().as_u16(), 307 | 308);
    let (next, previous) = (attempt.url(), attempt.previous());
    let same_origin = previous
        .first()
        .is_some_and(|first| first.origin() == next.origin());
    if keeps_body && same_origin && previous.len() <= MAX_REDIRECTS {
        attempt.follow()
    } else {
        attempt.stop()
    }
}
