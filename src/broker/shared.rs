//! What every delivery of a worker needs, shared by all its broker sessions. Its own
//! module so the consumer loop and the delivery path both depend on it, not on each
//! other.

use super::topology::Topology;
use crate::handlers;
use crate::store::{CommitWatch, Committer};
use crate::supervisor::Supervisor;
use std::time::Duration;

/// Retry and concurrency settings of the consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub prefetch: u16,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// How long in-flight deliveries may take to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

/// Everything a delivery needs, shared by all sessions of a worker.
pub struct Shared {
    pub handlers: handlers::Context,
    pub committer: Committer,
    /// Commits waiting, for the readiness watchdog.
    pub commits: CommitWatch,
    pub topology: Topology,
    pub settings: ConsumerSettings,
    pub supervisor: Supervisor,
}
