//! Input bounds, checked before any allocation-heavy work (docs/operations.md, failure handling).

use super::rejection::Rejection;

/// Largest accepted message body (docs/operations.md, failure handling: over 256 KiB is malformed).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Deepest accepted JSON nesting; real messages use 5 levels.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest accepted message id, correlation id or entity id.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted token (payment source token, customer token).
pub const MAX_TOKEN_LEN: usize = 1024;
/// Longest accepted free text (email, order number, status, currency).
pub const MAX_TEXT_LEN: usize = 320;
/// Most keys accepted in a payment source's `metadata` object.
pub const MAX_METADATA_KEYS: usize = 64;
/// Largest accepted `metadata` object once serialized.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

/// Deepest nesting of `[` / `{` in `body`, counted without parsing (strings skipped),
/// stopping as soon as `limit` is exceeded so hostile input costs one linear scan.
pub fn json_depth_exceeds(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A non-empty string of at most `max` bytes without control characters.
pub(crate) fn text(value: &str, field: &str, max: usize) -> Result<String, Rejection> {
    if value.is_empty() {
        return Err(Rejection::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Rejection::new(
            field,
            format!("longer than the {max}-byte limit"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::new(field, "contains control characters"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(!json_depth_exceeds(br#"{"a":[{"b":"[[[[[["}]}"#, 3));
        assert!(json_depth_exceeds(br#"{"a":[{"b":[1]}]}"#, 3));
        assert!(!json_depth_exceeds(br#"{"a":"\"{{{{"}"#, 1));
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod bounds;
