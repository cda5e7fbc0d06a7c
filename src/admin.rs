//! The admin HTTP server (docs/interface.md, admin HTTP): health, readiness, metrics, the read API and
//! the ops console at `/ui/` ([`console`]); optionally a second listener with only
//! health, readiness and metrics ([`serve_probes`]).

mod console;

use crate::broker::BrokerLink;
use crate::crypto::Keyring;
use crate::domain::{Clock, Secret};
use crate::error_chain::ErrorChain;
use crate::metrics as m;
use crate::store::{self, CommitWatch, wallet};
use crate::supervisor::Supervisor;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use sqlx::PgPool;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    pub pool: PgPool,
    /// The node of the worker's live broker connection (its topology declared), if any.
    pub broker: BrokerLink,
    /// Knows whether an internal task died.
    pub supervisor: Supervisor,
    pub metrics: PrometheusHandle,
    /// Bearer token of the read API; `None` disables it.
    pub token: Option<Secret>,
    /// The clock of the wallet rules (what is expired).
    pub clock: Clock,
    /// Commits waiting, for the commit watchdog.
    pub commits: CommitWatch,
    /// How long a commit may wait before the worker reports itself unready.
    pub commit_stall: std::time::Duration,
    /// The relay of this worker: the console's replays hand it what they committed.
    pub committed: tokio::sync::mpsc::UnboundedSender<Vec<crate::store::outbox::PendingEvent>>,
    /// Opens the dead letters the console shows; knows which keys stored rows needed
    /// and the worker lacks.
    pub keys: Keyring,
}

pub fn router(state: AdminState) -> Router {
    probes()
        .route(
            "/v1/customers/{id}/customer_payment_sources",
            get(customer_payment_sources),
        )
        .merge(console::router(&state))
        .with_state(state)
}

/// Health, readiness and metrics: what probes and Prometheus need, nothing more.
fn probes() -> Router<AdminState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Binds `addr` and serves until `shutdown`; returns the bound address (port 0 works).
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    listen(addr, "admin server", router(state), shutdown).await
}

/// Serves only `/metrics`, `/healthz` and `/readyz` on `addr` (`WALLET_METRICS_ADDR`),
/// so a deployment can expose them while the console and read API stay on loopback.
pub async fn serve_probes(
    addr: SocketAddr,
    state: AdminState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    listen(
        addr,
        "metrics listener",
        probes().with_state(state),
        shutdown,
    )
    .await
}

async fn listen(
    addr: SocketAddr,
    name: &'static str,
    app: Router,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the {name} to {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %ErrorChain(&err), server = name, "admin server failed");
        }
    });
    Ok((bound, task))
}

/// Whether the worker can do its work, and why not.
struct Readiness {
    /// The broker node in use (redacted URL); `None` while disconnected.
    node: Option<String>,
    database: bool,
    failure: Option<String>,
    /// Why commits are stalled, when one has waited too long (a lock held elsewhere,
    /// statements timing out): work is pending and nothing commits.
    stalled: Option<String>,
    /// Key ids stored rows needed and the worker lacks: never ready without them.
    missing_keys: Vec<String>,
}

impl Readiness {
    async fn check(state: &AdminState) -> Self {
        let readiness = Self {
            node: state.broker.node(),
            database: store::ping(&state.pool).await,
            failure: state.supervisor.failure(),
            stalled: state.commits.stalled(state.commit_stall),
            missing_keys: state.keys.missing_keys(),
        };
        let gauge = |up: bool| if up { 1.0 } else { 0.0 };
        metrics::gauge!(m::DATABASE_UP).set(gauge(readiness.database));
        metrics::gauge!(m::READY).set(gauge(readiness.ready()));
        readiness
    }

    fn ready(&self) -> bool {
        self.node.is_some()
            && self.database
            && self.failure.is_none()
            && self.stalled.is_none()
            && self.missing_keys.is_empty()
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let readiness = Readiness::check(&state).await;
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "broker": readiness.node.is_some(),
        "database": readiness.database,
        "node": readiness.node,
        "commits": readiness.stalled.as_deref().unwrap_or("ok"),
    });
    if let Some(failure) = readiness.failure {
        body["failure"] = failure.into();
    }
    if !readiness.missing_keys.is_empty() {
        body["missing_keys"] = json!(readiness.missing_keys);
        body["failure"] = format!(
            "stored secrets are sealed under key id(s) {} that WALLET_ENCRYPTION_KEYS does not hold",
            readiness.missing_keys.join(", ")
        )
        .into();
    }
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    Readiness::check(&state).await;
    crate::store::dead_letters::gauge::refresh(&state.pool).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Whether the request carries the configured bearer token, compared in constant time.
fn authorized(headers: &HeaderMap, token: Option<&Secret>) -> bool {
    // No token, or an empty one (`WALLET_ADMIN_TOKEN=`), disables the read API.
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return false;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token);
    bool::from(presented.as_bytes().ct_eq(token.expose().as_bytes()))
}

fn error(status: StatusCode, title: &str) -> Response {
    let body = json!({ "errors": [{ "status": status.as_u16().to_string(), "title": title }] });
    (
        status,
        [(header::CONTENT_TYPE, "application/vnd.api+json")],
        Json(body),
    )
        .into_response()
}

/// `?all=true` adds the unavailable sources.
#[derive(Debug, Default, serde::Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn customer_payment_sources(
    State(state): State<AdminState>,
    Path(customer_id): Path<String>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers, state.token.as_ref()) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return response;
    }
    match wallet::list(&state.pool, &customer_id, state.clock.now(), query.all).await {
        Ok(sources) => {
            let data: Vec<_> = sources
                .into_iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "type": "customer_payment_sources",
                        "attributes": {
                            "name": s.name,
                            "customer_id": s.customer_id,
                            "gateway_id": s.gateway_id,
                            "metadata": s.metadata,
                            "reference": s.reference,
                            "created_at": s.created_at,
                            "default": s.default,
                            "expired": s.expired,
                            "available": s.available,
                        },
                        "relationships": {
                            "customer": { "data": { "type": "customers", "id": customer_id } }
                        }
                    })
                })
                .collect();
            (
                [(header::CONTENT_TYPE, "application/vnd.api+json")],
                Json(json!({ "data": data })),
            )
                .into_response()
        }
        Err(err) => {
            tracing::error!(error = %ErrorChain(&err), "read API query failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
