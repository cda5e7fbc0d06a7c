//! The gateway of the cluster runs: most calls fail transiently, then every message
//! succeeds, the same way on every run. Eight of ten messages get a 503 with
//! `Retry-After: 6` on their first [`FAILED_CALLS`] calls: a `Retry-After` longer than the
//! worker's in-process wait ends its quick retries at once, so each failed call is one
//! attempt and the message waits about 6 s in a delayed retry before the next. About 70 %
//! of all calls fail, and many messages sit in delayed retries at any moment.

use crate::helpers::SigningGateway;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wiremock::{Request, Respond, ResponseTemplate};

/// Calls that fail for a failing message; it succeeds on the next.
pub const FAILED_CALLS: u32 = 3;

/// Counts calls per payment source token (one per message) and answers as above.
#[derive(Clone, Default)]
pub struct FlakyGateway {
    calls: Arc<Mutex<HashMap<String, u32>>>,
}

/// Calls per message, for the accounting line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calls {
    pub messages: usize,
    pub total: u64,
    pub failed: u64,
    pub max_per_message: u32,
}

impl FlakyGateway {
    pub fn calls(&self) -> Calls {
        let calls = self.calls.lock().expect("calls");
        let mut summary = Calls {
            messages: calls.len(),
            ..Calls::default()
        };
        for (token, n) in calls.iter() {
            summary.total += u64::from(*n);
            summary.failed += u64::from((*n).min(failures_for(token)));
            summary.max_per_message = summary.max_per_message.max(*n);
        }
        summary
    }
}

/// How many first calls of the message paying with `token` (`tok_<tag>_<i>`) fail.
fn failures_for(token: &str) -> u32 {
    let index: u64 = token
        .rsplit('_')
        .next()
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    if index % 10 < 8 { FAILED_CALLS } else { 0 }
}

impl Respond for FlakyGateway {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let doc: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let token = doc["data"]["attributes"]["payment_source_token"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let call = {
            let mut calls = self.calls.lock().expect("calls");
            let n = calls.entry(token.clone()).or_default();
            *n += 1;
            *n
        };
        if call <= failures_for(&token) {
            return ResponseTemplate::new(503).insert_header("Retry-After", "6");
        }
        SigningGateway.respond(request)
    }
}
