//! Masks secrets in dead letters before they are displayed (docs/interface.md, secrets): a
//! body may carry a `payment_source_token` (or any other secret field, of any JSON
//! type), a header may be named after a token, and no output (CLI, console) ever shows
//! one. The store keeps (sealed) and a replay republishes the original bytes; only
//! what people see is masked.

use super::secret::is_secret_field;
use serde_json::Value;

/// What a masked value is shown as.
pub const MASK: &str = "[redacted]";

/// Whether a header's value is shown masked whatever it holds: anything that names
/// itself a token, secret, password or authorization.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password", "authorization"]
        .iter()
        .any(|word| name.contains(word))
}

/// A header's value as shown: masked under a secret-looking name, else with the secret
/// fields of any JSON it holds masked.
pub fn header_value(name: &str, text: &str) -> String {
    if is_secret_header(name) {
        return MASK.to_owned();
    }
    String::from_utf8_lossy(&redact(text.as_bytes())).into_owned()
}

/// The body with the value of every secret field masked, whatever its JSON type (a
/// string keeps its quotes around the mask; a number, object or array becomes the
/// string `"[redacted]"`). Text, whitespace and invalid bytes elsewhere stay as they
/// were, so a malformed body is still shown as it came.
pub fn redact(body: &[u8]) -> Vec<u8> {
    let textual = redact_text(body);
    // A key spelled with escapes (`payment\u005fsource_token`) slips past the textual
    // pass; when the body is JSON, the parsed document has the final word.
    let Ok(mut doc) = serde_json::from_slice::<Value>(&textual) else {
        return textual;
    };
    if mask_json(&mut doc) {
        serde_json::to_vec(&doc).unwrap_or(textual)
    } else {
        textual
    }
}

/// Masks `"field": value` wherever a secret field's name occurs as a key, JSON or not.
fn redact_text(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    let mut at = 0;
    while let Some(found) = out
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'"'))
    {
        let open = at + found;
        let close = string_end(&out, open + 1).min(out.len());
        let colon = skip_whitespace(&out, close + 1);
        let is_key = close < out.len() && out.get(colon) == Some(&b':');
        if !(is_key && is_secret_field(&String::from_utf8_lossy(&out[open + 1..close]))) {
            at = close + 1;
            continue;
        }
        let start = skip_whitespace(&out, colon + 1);
        let (span, replacement) = match out.get(start) {
            Some(b'"') => (start + 1..string_end(&out, start + 1), MASK.to_owned()),
            Some(b'{' | b'[') => (start..container_end(&out, start), format!("\"{MASK}\"")),
            _ => (start..scalar_end(&out, start), format!("\"{MASK}\"")),
        };
        let span_end = span.start + replacement.len();
        out.splice(span, replacement.into_bytes());
        // Past the mask (and its closing quote, if any).
        at = span_end + 1;
    }
    out
}

/// Masks secret fields in a parsed document; says whether anything was left to mask.
fn mask_json(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, value) in map.iter_mut() {
                if is_secret_field(key) {
                    if value.as_str() != Some(MASK) {
                        *value = Value::String(MASK.to_owned());
                        changed = true;
                    }
                } else {
                    changed |= mask_json(value);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| mask_json(item) | changed),
        _ => false,
    }
}

/// Index just past the object or array starting at `at` (strings inside skipped), or
/// the end of a cut body.
fn container_end(bytes: &[u8], mut at: usize) -> usize {
    let mut depth = 0usize;
    while let Some(byte) = bytes.get(at) {
        match byte {
            b'"' => at = string_end(bytes, at + 1),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return at + 1;
                }
            }
            _ => {}
        }
        at += 1;
    }
    bytes.len()
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// Index of the closing quote of a string starting at `at` (or the end of a cut body).
fn string_end(bytes: &[u8], mut at: usize) -> usize {
    while let Some(byte) = bytes.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return at,
            _ => at += 1,
        }
    }
    bytes.len()
}

fn scalar_end(bytes: &[u8], mut at: usize) -> usize {
    while bytes
        .get(at)
        .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
    {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(body: &[u8]) -> String {
        String::from_utf8_lossy(&redact(body)).into_owned()
    }

    #[test]
    fn tokens_are_masked_and_everything_else_is_kept() {
        let body = br#"{"id":"m1", "payment_source_token" : "tok_\"x\"_1", "n": {"customer_token":"cus_9"}}"#;
        assert_eq!(
            shown(body),
            r#"{"id":"m1", "payment_source_token" : "[redacted]", "n": {"customer_token":"[redacted]"}}"#
        );
    }

    #[test]
    fn secret_looking_headers_are_masked_and_others_keep_their_text() {
        assert_eq!(header_value("x-payment_source_token", "tok_1"), MASK);
        assert_eq!(header_value("X-Api-Secret", "s"), MASK);
        assert_eq!(header_value("x-wallet-error", "malformed"), "malformed");
        assert_eq!(header_value("traceparent", "00-ab-cd-01"), "00-ab-cd-01");
        assert_eq!(
            header_value("x-note", r#"{"customer_token":"cus_1"}"#),
            r#"{"customer_token":"[redacted]"}"#
        );
    }

    #[test]
    fn tokens_in_broken_or_escaped_bodies_are_masked_too() {
        assert_eq!(
            shown(b"{not json \"payment_source_token\":\"tok_cut"),
            "{not json \"payment_source_token\":\"[redacted]"
        );
        assert_eq!(
            shown(b"{\"secret\": 12345}"),
            "{\"secret\": \"[redacted]\"}"
        );
        let escaped = shown(br#"{"payment\u005fsource_token":"tok_esc"}"#);
        assert!(!escaped.contains("tok_esc"), "{escaped}");
        assert_eq!(shown(b"\xff\xfe plain"), "\u{fffd}\u{fffd} plain");
    }

    #[test]
    fn every_secret_field_is_masked_whatever_its_json_type() {
        // Not JSON (a trailing comma): only the textual pass sees it.
        let body = br#"{"card_token": 4242424242424242, "client_secret": {"k": "cs_1", "n": [1]},
            "apiToken": ["at_1", {"x": "at_2"}], "password": "pw_1", "authorization": true,
            "secret": -1.5e3, "kept": "visible",}"#;
        let text = shown(body);
        for value in [
            "4242424242424242",
            "cs_1",
            "at_1",
            "at_2",
            "pw_1",
            "true",
            "1.5e3",
        ] {
            assert!(!text.contains(value), "{value} in {text}");
        }
        assert!(text.contains(r#""kept": "visible""#), "{text}");
        // JSON: the parsed pass agrees.
        let json = br#"{"data": {"payment_source_token": {"a": 1}, "customer_token": [7, 8]}}"#;
        assert_eq!(
            shown(json),
            r#"{"data": {"payment_source_token": "[redacted]", "customer_token": "[redacted]"}}"#
        );
        // A cut body: the value runs to its end.
        assert_eq!(
            shown(br#"{"secret": {"a": "s_1""#),
            r#"{"secret": "[redacted]""#
        );
    }
}
