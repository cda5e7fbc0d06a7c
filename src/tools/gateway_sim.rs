//! `gateway-sim`: a local `token_url` (docs/interface.md, command line; docs/interface.md, the token_url call) for development, demos and load
//! tests. It checks signatures and idempotency keys like a real gateway, answers with
//! deterministic tokens, and can add latency and inject 503s.

mod store;

use crate::domain::Secret;
use crate::gateway::signature::{hmac_sha256, verify};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::RngExt;
use serde_json::{Map, Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use store::{AnswerStore, Stored};

/// Stored answers kept for idempotent replay; the oldest are forgotten beyond this.
const MAX_STORED_ANSWERS: usize = 100_000;

/// How the simulated gateway behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Added before each answer, as a remote gateway's round trip would.
    pub latency: Duration,
    /// Probability (0.0–1.0) of answering 503 instead; such answers are not stored.
    pub error_rate: f64,
    /// The key requests must be signed with.
    pub secret: Secret,
}

/// Counters a test or the `demo` summary can read while the sim runs.
#[derive(Debug, Default)]
pub struct SimStats {
    requests: AtomicU64,
    signature_failures: AtomicU64,
    errors_injected: AtomicU64,
    replays: AtomicU64,
}

impl SimStats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }
    pub fn signature_failures(&self) -> u64 {
        self.signature_failures.load(Relaxed)
    }
    pub fn errors_injected(&self) -> u64 {
        self.errors_injected.load(Relaxed)
    }
    /// Requests answered from the idempotency store.
    pub fn replays(&self) -> u64 {
        self.replays.load(Relaxed)
    }
}

/// Serves the sim on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_stats(listener, config, Arc::default(), shutdown).await
}

/// [`serve`], counting into `stats` (keep a clone of the `Arc` to read them).
pub async fn serve_with_stats(
    listener: tokio::net::TcpListener,
    config: SimConfig,
    stats: Arc<SimStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config, stats))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The sim as a router: any POST path is a `token_url`.
pub fn router(config: SimConfig, stats: Arc<SimStats>) -> Router {
    let sim = Arc::new(Sim {
        config,
        stats,
        answers: AnswerStore::new(MAX_STORED_ANSWERS),
    });
    Router::new()
        .route("/", post(token))
        .route("/{*path}", post(token))
        .layer(DefaultBodyLimit::max(256 * 1024))
        .with_state(sim)
}

struct Sim {
    config: SimConfig,
    stats: Arc<SimStats>,
    answers: AnswerStore,
}

/// Why a request is refused before any waiting: its status, error code and message.
type Refused = (StatusCode, &'static str, &'static str);

/// What the sim needs from the JSON:API document.
struct SaveDocument {
    customer_id: String,
    payment_source_token: String,
    metadata: Map<String, Value>,
}

/// `POST /token`: checks the request, waits the configured latency, then replays the
/// answer stored for its key, injects a 503, or answers and stores the answer.
async fn token(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> Response {
    sim.stats.requests.fetch_add(1, Relaxed);
    let (key, document) = match sim.check(&headers, &body) {
        Ok(request) => request,
        Err((status, code, message)) => return refusal(status, code, message),
    };
    if !sim.config.latency.is_zero() {
        tokio::time::sleep(sim.config.latency).await;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &body);
    let fingerprint: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
    if let Some(stored) = sim.answers.get(key) {
        if stored.fingerprint != fingerprint {
            let message = "this Idempotency-Key was used for a different request";
            return refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            );
        }
        sim.stats.replays.fetch_add(1, Relaxed);
        return (stored.status, axum::Json(stored.body)).into_response();
    }
    if rand::rng().random::<f64>() < sim.config.error_rate {
        sim.stats.errors_injected.fetch_add(1, Relaxed);
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "injected error, try again",
        );
    }
    let (status, answer) = sim.answer(&document);
    sim.answers.put(
        key,
        Stored {
            fingerprint,
            status,
            body: answer.clone(),
        },
    );
    (status, axum::Json(answer)).into_response()
}

impl Sim {
    /// A request as a real gateway checks it, before any waiting: signed with the
    /// secret, with an `Idempotency-Key`, a document the sim understands. Its key and
    /// document, or the refusal.
    fn check<'h>(
        &self,
        headers: &'h HeaderMap,
        body: &[u8],
    ) -> Result<(&'h str, SaveDocument), Refused> {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        let signed = header("x-commercelayer-signature")
            .is_some_and(|s| verify(body, &self.config.secret, s));
        if !signed {
            self.stats.signature_failures.fetch_add(1, Relaxed);
            let message = "X-CommerceLayer-Signature is missing or does not match the body";
            return Err((StatusCode::UNAUTHORIZED, "invalid_signature", message));
        }
        let Some(key) = header("idempotency-key") else {
            return Err((
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "Idempotency-Key is required",
            ));
        };
        let Some(document) = parse(body) else {
            let message = "the body is not an external_payments document with an included customer";
            return Err((StatusCode::BAD_REQUEST, "invalid_request", message));
        };
        Ok((key, document))
    }

    fn answer(&self, doc: &SaveDocument) -> (StatusCode, Value) {
        if doc.payment_source_token.starts_with("tok_refuse") {
            let error = json!({"code": "card_declined", "message": "the card was declined"});
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"success": false, "data": {"error": error}}),
            );
        }
        let key = self.config.secret.expose().as_bytes();
        let customer = hex(&hmac_sha256(key, doc.customer_id.as_bytes()), 20);
        let source = format!("{}:{}", doc.customer_id, doc.payment_source_token);
        let source = hex(&hmac_sha256(key, source.as_bytes()), 24);
        let data = json!({
            "customer_token": format!("cus_{customer}"),
            "payment_source_token": format!("pst_{source}"),
            "metadata": doc.metadata,
        });
        (StatusCode::OK, json!({"success": true, "data": data}))
    }
}

fn parse(body: &[u8]) -> Option<SaveDocument> {
    let document: Value = serde_json::from_slice(body).ok()?;
    let data = document
        .get("data")
        .filter(|d| d["type"] == "external_payments")?;
    let attributes = data.get("attributes")?;
    let metadata = match attributes.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => return None,
    };
    let customer = document
        .get("included")?
        .as_array()?
        .iter()
        .find(|resource| resource["type"] == "customers")?;
    Some(SaveDocument {
        customer_id: customer.get("id")?.as_str()?.to_owned(),
        payment_source_token: attributes.get("payment_source_token")?.as_str()?.to_owned(),
        metadata,
    })
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let error = json!({"code": code, "message": message});
    (
        status,
        axum::Json(json!({"success": false, "data": {"error": error}})),
    )
        .into_response()
}

/// The first `len` lowercase hex digits of `bytes`.
fn hex(bytes: &[u8], len: usize) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out.truncate(len);
    out
}
