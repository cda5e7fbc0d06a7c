//! `Secret`: a string that can be used but never printed (docs/interface.md, secrets).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroizing;

/// A token or key. `Debug` and `Display` print `[redacted]`; the value is wiped
/// from memory on drop. Use [`Secret::expose`] only where the value leaves the
/// process on purpose (the gateway request, the database, `wallet.attached`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The clear value; every call site is a place where the secret is meant to leave.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Whether a JSON field of this name holds a secret (docs/interface.md, secrets):
/// `payment_source_token`, `customer_token`, anything else ending in `token`, `secret`
/// or `password` (`card_token`, `client_secret`, `apiToken`), and `authorization`.
/// Such a field's value, whatever its JSON type, is never echoed, stored in metadata or
/// shown.
pub fn is_secret_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "secret", "password"]
        .iter()
        .any(|word| name.ends_with(word))
        || name == "authorization"
}

/// Removes every field named like a secret from `map`, nested objects and arrays
/// included: free-form metadata is stored, listed and published, so a secret slipped
/// into it (`{"card_token": 4242…}`) is dropped at the boundary instead. Recursion is
/// bounded by the body's depth limit, checked before parsing.
pub fn drop_secret_fields(map: &mut serde_json::Map<String, serde_json::Value>) {
    map.retain(|key, _| !is_secret_field(key));
    map.values_mut().for_each(drop_nested);
}

fn drop_nested(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => drop_secret_fields(map),
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nested),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_dropped_from_metadata_at_any_depth() {
        let mut metadata = serde_json::json!({
            "brand": "visa", "card_token": 4242424242424242u64, "secret": { "a": 1 },
            "nested": { "client_secret": ["x"], "last4": "4242" },
            "list": [{ "network_token": "nt_1", "kept": true }]
        });
        drop_secret_fields(metadata.as_object_mut().unwrap());
        assert_eq!(
            metadata,
            serde_json::json!({ "brand": "visa", "nested": { "last4": "4242" },
                                "list": [{ "kept": true }] })
        );
    }

    #[test]
    fn secret_fields_are_recognised_by_name() {
        for name in [
            "payment_source_token",
            "customer_token",
            "secret",
            "client_secret",
            "card_token",
            "apiToken",
            "TOKEN",
            "password",
            "Authorization",
        ] {
            assert!(is_secret_field(name), "{name}");
        }
        for name in [
            "brand",
            "last4",
            "token_type",
            "tokenized",
            "fingerprint",
            "id",
        ] {
            assert!(!is_secret_field(name), "{name}");
        }
    }

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("tok_live_123");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "tok_live_123");
    }
}
