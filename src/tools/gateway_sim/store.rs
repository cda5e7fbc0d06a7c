//! The gateway-sim's idempotency store: the answer given to each `Idempotency-Key`,
//! replayed for a repeated call, bounded so a long load test cannot exhaust memory.

use axum::http::StatusCode;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// One stored answer.
#[derive(Clone)]
pub(crate) struct Stored {
    /// SHA-256 of the request body: one key reused for another request is an error.
    pub fingerprint: [u8; 32],
    pub status: StatusCode,
    pub body: Value,
}

/// Answers by key; beyond `capacity` the oldest are forgotten (FIFO).
pub(crate) struct AnswerStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_key: HashMap<String, Stored>,
    order: VecDeque<String>,
}

impl AnswerStore {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Stored> {
        self.lock().by_key.get(key).cloned()
    }

    pub fn put(&self, key: &str, stored: Stored) {
        let mut inner = self.lock();
        if inner.by_key.insert(key.to_owned(), stored).is_none() {
            inner.order.push_back(key.to_owned());
        }
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_key.remove(&oldest);
            }
        }
    }

    /// A panic while holding the lock cannot leave the map inconsistent (each
    /// operation is a single insert or remove), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: u8) -> Stored {
        Stored {
            fingerprint: [n; 32],
            status: StatusCode::OK,
            body: Value::from(n),
        }
    }

    #[test]
    fn the_oldest_answers_are_forgotten_beyond_capacity() {
        let store = AnswerStore::new(2);
        store.put("a", answer(1));
        store.put("b", answer(2));
        store.put("a", answer(3));
        store.put("c", answer(4));
        assert!(store.get("a").is_none());
        assert_eq!(store.get("b").map(|s| s.body), Some(Value::from(2)));
        assert_eq!(store.get("c").map(|s| s.fingerprint), Some([4; 32]));
    }
}
