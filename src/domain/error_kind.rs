//! Why a message failed: the closed set of `x-wallet-error` kinds (docs/operations.md,
//! failure handling). The one source for whether a failure is worth another attempt,
//! for metric labels and for the dead-letter header.

use std::fmt;

/// The kind of a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Not a message the worker can read: retrying cannot help.
    Malformed,
    /// A `wallet.save` whose order has not been placed (yet).
    OrderNotFound,
    /// The gateway did not answer usefully: timeout, 408, 429, 5xx, open circuit.
    GatewayUnavailable,
    /// Something unexpected inside the worker (a database refusal, a panic).
    InternalError,
    /// The message crashed, panicked or stalled the worker too often.
    PoisonMessage,
    /// The broker's own redelivery limit (a dead letter the broker made).
    DeliveryLimit,
}

impl ErrorKind {
    /// Every kind, for metric series that start at zero.
    pub const ALL: [ErrorKind; 6] = [
        Self::Malformed,
        Self::OrderNotFound,
        Self::GatewayUnavailable,
        Self::InternalError,
        Self::PoisonMessage,
        Self::DeliveryLimit,
    ];

    /// The `x-wallet-error` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::OrderNotFound => "order_not_found",
            Self::GatewayUnavailable => "gateway_unavailable",
            Self::InternalError => "internal_error",
            Self::PoisonMessage => "poison_message",
            Self::DeliveryLimit => "delivery_limit",
        }
    }

    /// Whether another attempt may succeed: a transient failure is retried until the
    /// attempts run out; any other is dead-lettered at once.
    pub fn is_transient(self) -> bool {
        match self {
            Self::OrderNotFound | Self::GatewayUnavailable | Self::InternalError => true,
            Self::Malformed | Self::PoisonMessage | Self::DeliveryLimit => false,
        }
    }

    /// The kind named `text`, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ErrorKind::parse("other"), None);
    }

    #[test]
    fn only_failures_that_may_pass_next_time_are_transient() {
        let transient: Vec<_> = ErrorKind::ALL
            .into_iter()
            .filter(|k| k.is_transient())
            .collect();
        assert_eq!(
            transient,
            [
                ErrorKind::OrderNotFound,
                ErrorKind::GatewayUnavailable,
                ErrorKind::InternalError
            ]
        );
    }
}
