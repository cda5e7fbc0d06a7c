//! Identifiers the worker mints.

use rand::RngExt;
use rand::distr::Alphanumeric;

/// A customer payment source id: 10 random alphanumeric characters, like `QgDXpwsqDx`.
pub fn customer_payment_source_id() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(10)
        .map(char::from)
        .collect()
}

/// A fresh outbound event id.
pub fn event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn customer_payment_source_ids_are_ten_alphanumerics() {
        let id = super::customer_payment_source_id();
        assert_eq!(id.len(), 10);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, super::customer_payment_source_id());
    }
}
