//! Identifiers: the ids messages carry, as types checked once at the boundary (non-empty,
//! at most [`MAX_ID_LEN`] bytes, no control characters), so one kind of id cannot be
//! passed for another and an unchecked one cannot get past parsing; and the ids the
//! worker mints.
//!
//! On the wire (serde) and in the database (sqlx) an id is its plain text.

use super::limits::MAX_ID_LEN;
use super::limits::text;
use super::rejection::Rejection;
use rand::RngExt;
use rand::distr::Alphanumeric;
use serde::{Serialize, Serializer};
use sqlx::Postgres;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use std::fmt;

macro_rules! id {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id in `value`, sent as `field`, if it is a usable id.
            pub fn parse(value: &str, field: &str) -> Result<Self, Rejection> {
                text(value, field, MAX_ID_LEN).map(Self)
            }

            /// An id read back from the store, or minted by the worker: checked when
            /// it was first parsed (or made well-formed).
            pub fn stored(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// Transparent: the id is its text.
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        /// Transparent: a `text` column.
        impl sqlx::Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <String as sqlx::Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <String as sqlx::Type<Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<'_, Postgres>>::encode(self.0.as_str(), buf)
            }
        }

        /// Rows hold only ids that were parsed before they were written.
        impl sqlx::Decode<'_, Postgres> for $name {
            fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
                <String as sqlx::Decode<'_, Postgres>>::decode(value).map(Self)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <String as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    )*};
}

id! {
    /// An inbound message's id: the idempotency key.
    MessageId;
    /// An order's id.
    OrderId;
    /// A customer's id.
    CustomerId;
    /// A customer payment source's id (a source in a wallet), like `QgDXpwsqDx`.
    SourceId;
    /// A gateway's id.
    GatewayId;
}

/// A customer payment source id: 10 random alphanumeric characters, like `QgDXpwsqDx`.
pub fn customer_payment_source_id() -> SourceId {
    SourceId(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(10)
            .map(char::from)
            .collect(),
    )
}

/// A fresh outbound event id.
pub fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_payment_source_ids_are_ten_alphanumerics() {
        let id = customer_payment_source_id();
        assert_eq!(id.len(), 10);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, customer_payment_source_id());
    }

    #[test]
    fn an_id_is_checked_where_it_is_parsed() {
        let id = OrderId::parse("o_1", "data.order_id").unwrap();
        assert_eq!(id.as_str(), "o_1");
        assert_eq!(serde_json::to_value(&id).unwrap(), "o_1");
        assert_eq!(format!("{id:>4}"), " o_1");
        for bad in ["", "a\nb", &"x".repeat(MAX_ID_LEN + 1)] {
            let err = CustomerId::parse(bad, "data.customer_id").unwrap_err();
            assert_eq!(err.field, "data.customer_id");
        }
        assert!(GatewayId::parse(&"x".repeat(MAX_ID_LEN), "gateway_id").is_ok());
    }
}
