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
//! The AEAD is XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): its 192-bit random
//! nonces need no coordination between worker processes. AES-GCM's 96-bit random
//! nonces are good for 2^32 seals per key (NIST SP 800-38D), which every outbox body
//! being sealed would use up in weeks at a thousand events a second.

mod keyring;
mod keys;

pub use keyring::{FingerprintKey, Keyring, OpenError, Row, Sealed};
pub use keys::{DataKeys, KEYS_VAR, KeyError};
