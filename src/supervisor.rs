//! Supervision of the worker's long-lived tasks (committers, relay, ackers, watchers).
//! A panic in one is contained to it, recorded (`wallet_panics_total{task}`, an error
//! line), and makes the worker unfit: `/readyz` answers 503 and `run` returns an error,
//! so the process exits non-zero and its orchestrator restarts it instead of leaving a
//! worker that looks ready but can no longer commit.

use crate::metrics as m;
use futures::FutureExt;
use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Shared by every task of one worker.
#[derive(Clone, Default)]
pub struct Supervisor {
    died: CancellationToken,
    cause: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    /// Spawns `task`; a panic in it marks the worker failed. The handle yields `None`
    /// when the task panicked.
    pub fn spawn<F>(&self, name: &'static str, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        debug_assert!(
            m::PANIC_TASKS.contains(&name),
            "add the task {name} to metrics::PANIC_TASKS, so its panics counter starts at zero"
        );
        let supervisor = self.clone();
        tokio::spawn(async move {
            match AssertUnwindSafe(task).catch_unwind().await {
                Ok(output) => Some(output),
                Err(panic) => {
                    supervisor.task_died(name, &panic_message(panic.as_ref()));
                    None
                }
            }
        })
    }

    /// Records that the task `name` can no longer run.
    pub fn task_died(&self, name: &'static str, why: &str) {
        metrics::counter!(m::PANICS, "task" => name).increment(1);
        tracing::error!(
            task = name,
            cause = why,
            "internal task died; the worker stops"
        );
        let mut cause = self.cause.lock().unwrap_or_else(|p| p.into_inner());
        cause.get_or_insert_with(|| format!("internal task {name} died: {why}"));
        self.died.cancel();
    }

    /// Why the worker is unfit, once a task died.
    pub fn failure(&self) -> Option<String> {
        self.cause.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Resolves once a task died.
    pub async fn failed(&self) {
        self.died.cancelled().await;
    }
}

/// The text a panic carried (`panic!("...")`), or a placeholder.
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
