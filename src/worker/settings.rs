//! What a worker runs with, as plain values: the command line (`run`, `demo`) fills them
//! from its flags and environment variables, tests fill them directly. The worker never
//! sees the command line itself.

use crate::crypto::DataKeys;
use crate::domain::{Clock, Secret};
use std::net::SocketAddr;

/// Every setting of [`super::start`]; units are in the names.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub db: DbSettings,
    pub amqp: AmqpSettings,
    /// Messages in flight per worker process (at least 1).
    pub prefetch: u16,
    /// Attempts before a transiently failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delayed-retry backoff: first delay.
    pub retry_base_ms: u64,
    /// Delayed-retry backoff: longest delay.
    pub retry_max_ms: u64,
    /// Admin HTTP server (health, readiness, metrics, read API, console); port 0 picks one.
    pub admin_addr: SocketAddr,
    /// A second listener serving only /metrics, /healthz and /readyz, when set.
    pub metrics_addr: Option<SocketAddr>,
    /// The read API's bearer token and the console's password; without one both are off.
    pub admin_token: Option<Secret>,
    /// Postgres connections of this process; derived from the prefetch when `None`.
    pub db_pool_size: Option<u32>,
    /// Consecutive transient gateway failures that open its circuit.
    pub circuit_threshold: i32,
    /// How long an open circuit keeps calls away from a gateway.
    pub circuit_cool_down_ms: u64,
    /// Time given to in-flight messages at shutdown before they are handed back.
    pub shutdown_grace_secs: u64,
    /// Unexpired payment sources one customer may hold (`wallet_full` beyond it).
    pub max_sources_per_customer: i64,
    /// The clock of the wallet rules (card expiry); tests set it.
    pub clock: Clock,
    /// The data-encryption keys; `None`: read from the environment at start.
    pub keys: Option<DataKeys>,
    /// How long a processed message id is remembered: the dedupe window.
    pub inbox_retention_days: u32,
    /// How long an order (and its payment source token) is kept after its last change.
    pub order_retention_days: u32,
    /// Longest a database statement may run; one that runs out is tried again.
    pub db_statement_timeout_ms: u64,
    /// Longest a database statement may wait for a lock.
    pub db_lock_timeout_ms: u64,
    /// How long a commit may wait before `/readyz` reports the commits stalled.
    pub commit_stall_secs: u64,
    /// How long a dead letter is kept in the dead-letter store.
    pub dead_letter_retention_days: u32,
    /// Time between two retention passes.
    pub retention_interval_ms: u64,
}

/// Where the store of record is.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Postgres URL (TLS via `sslmode`); the database is created when it does not exist.
    pub database_url: String,
}

/// Where the worker's messages come from and go.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Broker URL, or several comma-separated URLs naming the nodes of one cluster.
    pub amqp_url: String,
    /// Topic exchange for inbound and outbound messages.
    pub exchange: String,
    /// The worker's inbound queue; the dead-letter queue is `<queue>.dlq`.
    pub queue: String,
}
