//! Failure groups (docs/operations.md, failure groups): dead letters with the same cause
//! share a group — the same error kind, the same message type, and the same detail once
//! its ids, numbers and quoted values are replaced by `*` — so ops see one line
//! "2000 × order * has not been placed yet" instead of 2000 lines, and can replay or
//! purge them in one action.

use ring::digest::{Context, SHA256};

/// Characters of a label at most (a detail can be long; its start says what it is).
const MAX_LABEL_CHARS: usize = 200;

/// A dead letter's failure group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureGroup {
    /// 16 hex digits, stable across processes and releases: what `--group` takes.
    pub key: String,
    /// The detail with its ids, numbers and quoted values replaced by `*`.
    pub label: String,
}

/// The group of a dead letter of `message_type` (its routing key, if known) that died
/// with `error` and `detail`.
pub fn of(error: &str, message_type: Option<&str>, detail: &str) -> FailureGroup {
    let label = label(detail);
    let mut hash = Context::new(&SHA256);
    for part in [error, message_type.unwrap_or(""), label.as_str()] {
        hash.update(part.as_bytes());
        hash.update(&[0]);
    }
    let key = hash.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    FailureGroup { key, label }
}

/// `detail` without what differs from one message to the next.
pub fn label(detail: &str) -> String {
    let unquoted = strip_quoted(detail);
    let mut words: Vec<String> = Vec::new();
    for word in unquoted.split_whitespace() {
        let word = strip_word(word);
        if word == "*" && words.last().is_some_and(|last| last == "*") {
            continue;
        }
        words.push(word);
    }
    let label = words.join(" ");
    match label.char_indices().nth(MAX_LABEL_CHARS) {
        Some((cut, _)) => format!("{}…", &label[..cut]),
        None => label,
    }
}

/// Replaces `"…"`, `'…'` and `` `…` `` spans by `*`. A quote opens a span only after a
/// non-alphanumeric character (an apostrophe inside a word does not) and closes it
/// only before one; an unclosed quote is left as it is.
fn strip_quoted(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = matches!(c, '"' | '\'' | '`') && (i == 0 || !chars[i - 1].is_alphanumeric());
        if opens {
            let close = (i + 1..chars.len()).find(|&j| {
                chars[j] == c && chars.get(j + 1).is_none_or(|next| !next.is_alphanumeric())
            });
            if let Some(close) = close {
                out.push('*');
                i = close + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A word, or `*` (its surrounding punctuation kept) when it looks like an id or a
/// number: it holds a digit, or mixes cases past its first letter (`qaMAhZkZvd`).
fn strip_word(word: &str) -> String {
    let is_edge = |c: char| {
        matches!(
            c,
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ';' | ':' | '.' | '*'
        )
    };
    let core = word.trim_matches(is_edge);
    if core.is_empty() {
        return word.to_owned();
    }
    let has_digit = core.chars().any(|c| c.is_ascii_digit());
    let inner_upper = core.chars().skip(1).any(char::is_uppercase);
    let has_lower = core.chars().any(char::is_lowercase);
    if !(has_digit || (inner_upper && has_lower)) {
        return word.to_owned();
    }
    let start = word.find(core).unwrap_or(0);
    format!("{}*{}", &word[..start], &word[start + core.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_numbers_and_quoted_values_are_stripped() {
        assert_eq!(
            label("order qaMAhZkZvd has not been placed yet"),
            "order * has not been placed yet"
        );
        assert_eq!(
            label("order ord_1234 has not been placed yet"),
            "order * has not been placed yet"
        );
        assert_eq!(
            label("body: expected value at line 1 column 2"),
            "body: expected value at line * column *"
        );
        assert_eq!(
            label(
                "unknown variant `order.cancelled`, expected one of `order.placed`, `wallet.save`"
            ),
            "unknown variant *, expected one of *, *"
        );
        assert_eq!(
            label(r#"gateway acme-pay refused: "card 4242 declined" (HTTP 402)"#),
            "gateway acme-pay refused: * (HTTP *)"
        );
        assert_eq!(
            label("data.order.customer.id: missing field"),
            "data.order.customer.id: missing field"
        );
        assert_eq!(
            label("the gateway's answer can't be read"),
            "the gateway's answer can't be read"
        );
    }

    #[test]
    fn the_same_cause_is_one_group_and_another_kind_or_type_is_another() {
        let a = of(
            "order_not_found",
            Some("wallet.save"),
            "order o_1 has not been placed yet",
        );
        let b = of(
            "order_not_found",
            Some("wallet.save"),
            "order o_2 has not been placed yet",
        );
        assert_eq!(a, b);
        assert_eq!(a.key.len(), 16);
        assert_ne!(
            a.key,
            of(
                "internal_error",
                Some("wallet.save"),
                "order o_1 has not been placed yet"
            )
            .key
        );
        assert_ne!(
            a.key,
            of("order_not_found", None, "order o_1 has not been placed yet").key
        );
        let long = "x ".repeat(500);
        assert_eq!(label(&long).chars().count(), MAX_LABEL_CHARS + 1);
    }
}
