//! An error and its causes on one line, for a log field: what anyhow's `{:#}` prints,
//! for any `std::error::Error` (on which `{:#}` prints only the outermost message).

use std::error::Error;
use std::fmt;

/// Displays `outer: cause: root cause`. A cause whose text is already on the line is
/// left out: many errors repeat their source's message in their own.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let text = err.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = err.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot read the outbox")]
        Read(#[source] std::io::Error),
        #[error("broker connection failed: {0}")]
        Repeating(#[source] std::io::Error),
    }

    #[test]
    fn the_causes_follow_the_message_once_each() {
        let refused = || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let read = Outer::Read(refused());
        assert_eq!(
            ErrorChain(&read).to_string(),
            "cannot read the outbox: refused"
        );
        let repeating = Outer::Repeating(refused());
        assert_eq!(
            ErrorChain(&repeating).to_string(),
            "broker connection failed: refused"
        );
    }
}
