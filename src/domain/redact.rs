//! Masks secrets in dead letters before they are displayed (docs/interface.md, secrets): a
//! body may carry a `payment_source_token`, a header may be named after a token, and no
//! output (CLI, console) ever shows one. The store keeps and a replay republishes the
//! original bytes; only what people see is masked.

use serde_json::Value;

/// Fields whose values are secrets wherever they appear in a body.
pub const SECRET_FIELDS: [&str; 3] = ["payment_source_token", "customer_token", "secret"];

/// What a masked value is shown as.
pub const MASK: &str = "[redacted]";

/// Whether a header's value is shown masked whatever it holds: the body's secret field
/// names, and anything that names itself a token, secret, password or authorization.
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_FIELDS.iter().any(|field| name.contains(field))
        || ["token", "secret", "password", "authorization"]
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

/// The body with the value of every secret field masked. Text, whitespace and invalid
/// bytes elsewhere stay as they were, so a malformed body is still shown as it came.
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

/// Masks `"field": value` wherever it occurs, JSON or not.
fn redact_text(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    for field in SECRET_FIELDS {
        let needle = format!("\"{field}\"");
        let mut from = 0;
        while let Some(found) = find(&out[from..], needle.as_bytes()) {
            let key_end = from + found + needle.len();
            let colon = skip_whitespace(&out, key_end);
            if out.get(colon) != Some(&b':') {
                from = key_end;
                continue;
            }
            let start = skip_whitespace(&out, colon + 1);
            let (span, replacement) = match out.get(start) {
                Some(b'"') => (start + 1..string_end(&out, start + 1), MASK.to_owned()),
                _ => (start..scalar_end(&out, start), format!("\"{MASK}\"")),
            };
            from = span.start + replacement.len();
            out.splice(span, replacement.into_bytes());
        }
    }
    out
}

/// Masks secret fields in a parsed document; says whether anything was left to mask.
fn mask_json(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, value) in map.iter_mut() {
                if SECRET_FIELDS.contains(&key.as_str()) {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
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
}
