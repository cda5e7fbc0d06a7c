//! What a dead letter is, whatever its source (docs/operations.md, the dead-letter
//! store): what its body tells when it parses, which error kind it carries, and which
//! "life" of its message it belongs to.

use super::limits::{MAX_BODY_BYTES, MAX_ID_LEN, MAX_JSON_DEPTH, json_depth_exceeds};
use ring::digest::{Context, SHA256, digest};
use serde_json::Value;

/// The error kind of a dead letter nobody explained: published to the dead-letter queue
/// without `x-wallet-error` and without the broker's `x-death`.
pub const UNKNOWN_ERROR: &str = "unknown";

/// The header a replayed message carries: when it was replayed. The worker then knows
/// it may have been handled before, and its next death is a new dead letter.
pub const REPLAYED_AT: &str = "x-wallet-replayed-at";

/// Characters of an error kind at most.
const MAX_KIND_LEN: usize = 64;

/// What a body tells about its message, when it is a JSON envelope; each field only
/// when present and a plausible id (non-empty, at most 128 characters, no control
/// characters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sniffed {
    pub id: Option<String>,
    /// The envelope `type`.
    pub kind: Option<String>,
    pub correlation_id: Option<String>,
    /// `data.order.id` or `data.order_id`.
    pub order_id: Option<String>,
    /// `data.order.customer.id` or `data.customer_id`.
    pub customer_id: Option<String>,
}

impl Sniffed {
    /// Reads `body` if it is JSON within the input bounds; anything else tells nothing.
    pub fn of(body: &[u8]) -> Self {
        if body.len() > MAX_BODY_BYTES || json_depth_exceeds(body, MAX_JSON_DEPTH) {
            return Self::default();
        }
        let Ok(doc) = serde_json::from_slice::<Value>(body) else {
            return Self::default();
        };
        let text = |paths: &[&str]| paths.iter().find_map(|path| plausible(doc.pointer(path)?));
        Self {
            id: text(&["/id"]),
            kind: text(&["/type"]),
            correlation_id: text(&["/correlation_id"]),
            order_id: text(&["/data/order/id", "/data/order_id"]),
            customer_id: text(&["/data/order/customer/id", "/data/customer_id"]),
        }
    }
}

fn plausible(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    (!text.is_empty() && text.chars().count() <= MAX_ID_LEN && !text.chars().any(char::is_control))
        .then(|| text.to_owned())
}

/// An error kind as the store and the events carry it: lowercase letters, digits and
/// `_`, starting with a letter (another producer's header may hold anything).
pub fn error_kind(raw: &str) -> String {
    let mut kind: String = raw
        .trim()
        .chars()
        .take(MAX_KIND_LEN)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .collect();
    if kind.is_empty() {
        return UNKNOWN_ERROR.to_owned();
    }
    if !kind.starts_with(|c: char| c.is_ascii_lowercase()) {
        kind.insert_str(0, "x_");
    }
    kind
}

/// Which life of a message a dead letter belongs to: SHA-256 of its id (else of its
/// body), its original routing key and its `x-wallet-replayed-at`. The same message
/// dead-lettered twice before anyone replayed it (a worker that crashed between
/// publishing the dead letter and acking the message) is one dead letter; once
/// replayed, it carries a new `x-wallet-replayed-at` and its next death is a new one.
pub fn dedupe_key(
    message_id: Option<&str>,
    body: &[u8],
    routing_key: Option<&str>,
    replayed_at: Option<&str>,
) -> Vec<u8> {
    let mut hash = Context::new(&SHA256);
    match message_id {
        Some(id) => {
            hash.update(b"id\0");
            hash.update(id.as_bytes());
        }
        None => {
            hash.update(b"body\0");
            hash.update(digest(&SHA256, body).as_ref());
        }
    }
    for part in [routing_key, replayed_at] {
        hash.update(&[0]);
        hash.update(part.unwrap_or("").as_bytes());
    }
    hash.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_tells_its_ids_when_it_is_an_envelope() {
        let body = br#"{"id":"m1","type":"wallet.attach","correlation_id":"c1",
            "data":{"order":{"id":"o1","customer":{"id":"cu1"}}}}"#;
        let sniffed = Sniffed::of(body);
        assert_eq!(sniffed.id.as_deref(), Some("m1"));
        assert_eq!(sniffed.kind.as_deref(), Some("wallet.attach"));
        assert_eq!(sniffed.correlation_id.as_deref(), Some("c1"));
        assert_eq!(sniffed.order_id.as_deref(), Some("o1"));
        assert_eq!(sniffed.customer_id.as_deref(), Some("cu1"));
        let save = Sniffed::of(br#"{"data":{"order_id":"o2","customer_id":"cu2"}}"#);
        assert_eq!(
            (save.order_id.as_deref(), save.customer_id.as_deref()),
            (Some("o2"), Some("cu2"))
        );
        assert_eq!(Sniffed::of(b"{not json"), Sniffed::default());
        assert_eq!(Sniffed::of(br#"{"id":""}"#).id, None);
        assert_eq!(Sniffed::of(br#"{"id":"a\u0000b"}"#).id, None);
        assert_eq!(Sniffed::of(br#"{"id":12}"#).id, None);
    }

    #[test]
    fn error_kinds_are_kept_to_the_pattern() {
        assert_eq!(error_kind("order_not_found"), "order_not_found");
        assert_eq!(error_kind("Delivery Limit!"), "delivery_limit_");
        assert_eq!(error_kind("42"), "x_42");
        assert_eq!(error_kind("  "), UNKNOWN_ERROR);
        assert_eq!(error_kind(&"a".repeat(100)).len(), MAX_KIND_LEN);
    }

    #[test]
    fn a_message_has_one_dead_letter_per_life() {
        let first = dedupe_key(Some("m1"), b"a", Some("wallet.save"), None);
        assert_eq!(
            first,
            dedupe_key(Some("m1"), b"b", Some("wallet.save"), None)
        );
        assert_ne!(
            first,
            dedupe_key(Some("m1"), b"a", Some("wallet.save"), Some("t"))
        );
        assert_ne!(
            first,
            dedupe_key(Some("m1"), b"a", Some("order.placed"), None)
        );
        let anonymous = dedupe_key(None, b"a", Some("wallet.save"), None);
        assert_eq!(anonymous, dedupe_key(None, b"a", Some("wallet.save"), None));
        assert_ne!(anonymous, dedupe_key(None, b"b", Some("wallet.save"), None));
    }
}
