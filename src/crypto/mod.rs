//! Envelope encryption of the secrets the store keeps (docs/interface.md, secrets):
//! payment-source tokens, gateway secrets and outbox bodies are sealed with an AEAD
//! under a data key before they reach Postgres, and opened only where they are used.
//!
//! The boundary is small on purpose. [`DataKeys`] are the operator's keys (from
//! `WALLET_ENCRYPTION_KEYS` or its `_FILE`), the first one active; [`Keyring`] adds
//! the fingerprint key (stored in the database, wrapped by a data key) and is what the
//! rest of the worker holds. Everything else sees three operations: [`Keyring::seal`],
//! [`Keyring::open`] and [`Keyring::fingerprint`], each naming the row a value belongs
//! to ([`Row`]), whose identity is bound into the ciphertext.
//!
//! A key held by a KMS instead of the environment would replace the inside of
//! [`DataKeys`] only: `seal` would ask the KMS for a data key per batch (or unwrap a
//! locally cached one) and store its wrapped form as the key id, `open` would unwrap by
//! that id. Callers, the stored format and the rotation commands stay as they are.
//!
//! The AEAD is AES-256-GCM from `ring`, the same provider TLS uses. Random 96-bit GCM
//! nonces would be good for only 2^32 seals per key (NIST SP 800-38D), which sealing
//! every outbox body would use up in weeks at a thousand events a second; so each seal
//! derives its own key from the data key and a 24-byte random salt (HKDF-SHA256) and
//! uses it once. Worker processes need no coordination.

mod keyring;
mod keys;

pub use keyring::{FingerprintKey, Keyring, OpenError, Row, Sealed};
pub use keys::{DataKeys, KEYS_VAR, KeyError};
