//! The closed set of inbound message types: the routing keys the worker consumes and the
//! envelope `type`s it accepts (docs/messages.md). On the wire and in the database a
//! type is its routing key; inside the worker it is this enum.

use serde::{Serialize, Serializer};
use std::fmt;

/// What an inbound message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    /// `order.placed`: record an order, saving its payment source when it asks to.
    OrderPlaced,
    /// `wallet.save`: save the payment source of an order already placed.
    WalletSave,
    /// `wallet.attach`: attach a stored source to an order in checkout.
    WalletAttach,
    /// `wallet.remove`: remove a source from its customer's wallet.
    WalletRemove,
    /// `wallet.set_default`: make a source its customer's default.
    WalletSetDefault,
}

impl MessageType {
    /// Every type, in the order the docs list them (bindings, metric series, filters).
    pub const ALL: [MessageType; 5] = [
        Self::OrderPlaced,
        Self::WalletSave,
        Self::WalletAttach,
        Self::WalletRemove,
        Self::WalletSetDefault,
    ];

    /// The routing keys of [`Self::ALL`], for the places that take them as text (queue
    /// bindings, SQL filters).
    pub const NAMES: [&'static str; 5] = [
        Self::OrderPlaced.as_str(),
        Self::WalletSave.as_str(),
        Self::WalletAttach.as_str(),
        Self::WalletRemove.as_str(),
        Self::WalletSetDefault.as_str(),
    ];

    /// The routing key and envelope `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrderPlaced => "order.placed",
            Self::WalletSave => "wallet.save",
            Self::WalletAttach => "wallet.attach",
            Self::WalletRemove => "wallet.remove",
            Self::WalletSetDefault => "wallet.set_default",
        }
    }

    /// The type whose routing key is `text`, if the worker consumes it.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::MessageType;

    #[test]
    fn every_type_reads_back_from_its_routing_key() {
        for kind in MessageType::ALL {
            assert_eq!(MessageType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(MessageType::parse("order.cancelled"), None);
        assert_eq!(MessageType::parse("wallet.saved"), None);
    }

    #[test]
    fn names_follow_all() {
        let names = MessageType::ALL.map(MessageType::as_str);
        assert_eq!(names, MessageType::NAMES);
        assert_eq!(
            names,
            [
                "order.placed",
                "wallet.save",
                "wallet.attach",
                "wallet.remove",
                "wallet.set_default"
            ]
        );
    }

    #[test]
    fn serializes_as_its_routing_key() {
        let json = serde_json::to_value(MessageType::WalletSetDefault).unwrap();
        assert_eq!(json, "wallet.set_default");
    }
}
