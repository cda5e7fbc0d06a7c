//! The commit watchdog (docs/operations.md, bounded waits): how long the oldest commit
//! still waiting has waited, and why the last attempt failed, so `/readyz` can say
//! that commits are stalled and why instead of answering ready while nothing commits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Commits in progress, shared by the deliveries and the admin server.
#[derive(Clone, Default)]
pub struct CommitWatch(Arc<Inner>);

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When each waiting commit started.
    waiting: HashMap<u64, Instant>,
    /// Why the last failed attempt failed, until a commit succeeds.
    last_error: Option<String>,
}

/// One commit waiting; it stops counting when dropped (committed, or given up).
pub struct Pending {
    watch: CommitWatch,
    id: u64,
}

impl CommitWatch {
    /// Starts timing one commit, until the returned guard is dropped.
    pub fn pending(&self) -> Pending {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        self.state().waiting.insert(id, Instant::now());
        Pending {
            watch: self.clone(),
            id,
        }
    }

    /// Records why an attempt failed (a short name, never data).
    pub fn failed(&self, why: String) {
        self.state().last_error = Some(why);
    }

    /// `Some(cause)` when a commit has waited longer than `limit`.
    pub fn stalled(&self, limit: Duration) -> Option<String> {
        let state = self.state();
        let oldest = state.waiting.values().min()?.elapsed();
        (oldest > limit).then(|| {
            let mut cause = format!("stalled: a commit has waited {} s", oldest.as_secs());
            if let Some(error) = &state.last_error {
                cause.push_str(&format!("; last error: {error}"));
            }
            cause
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Pending {
    /// The commit went through: earlier failures no longer explain anything.
    pub fn committed(self) {
        self.watch.state().last_error = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.watch.state().waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::CommitWatch;
    use std::time::Duration;

    #[test]
    fn a_commit_waiting_too_long_is_reported_with_the_last_error_until_it_ends() {
        let watch = CommitWatch::default();
        assert_eq!(watch.stalled(Duration::ZERO), None, "nothing waits");
        let pending = watch.pending();
        watch.failed("lock timeout".into());
        let cause = watch.stalled(Duration::ZERO).expect("stalled");
        assert!(
            cause.starts_with("stalled: a commit has waited 0 s"),
            "{cause}"
        );
        assert!(cause.ends_with("last error: lock timeout"), "{cause}");
        assert_eq!(watch.stalled(Duration::from_secs(3600)), None);
        pending.committed();
        assert_eq!(watch.stalled(Duration::ZERO), None);
    }
}
