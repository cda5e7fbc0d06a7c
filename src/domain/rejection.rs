//! Why an inbound message is malformed: its own module, below both the envelope and the
//! commands that produce it.

/// Why a message is malformed: the field (a dotted path, or `body`) and what is wrong.
/// Never contains a value taken from the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Rejection {
    pub field: String,
    pub reason: String,
}

impl Rejection {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
