//! The keyring the worker holds: the data keys, the fingerprint key, and what it has
//! found missing (for `/readyz`).

use super::keys::DataKeys;
use crate::domain::Secret;
use crate::domain::wallet::Fingerprint;
use ring::hmac;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Where a sealed value lives: bound into its ciphertext as associated data, so a
/// value copied to another row, column or table does not open there.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub table: &'static str,
    pub column: &'static str,
    /// The row's primary key (or another unique key).
    pub id: &'a str,
}

impl Row<'_> {
    /// The associated data: a fixed label, the row's identity and the key id, each
    /// ended by a NUL (none of them holds one).
    fn aad(&self, key_id: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(64 + self.id.len());
        for part in [
            "wallet-worker.sealed.v1",
            self.table,
            self.column,
            self.id,
            key_id,
        ] {
            aad.extend_from_slice(part.as_bytes());
            aad.push(0);
        }
        aad
    }
}

impl fmt::Display for Row<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{} of row {}", self.table, self.column, self.id)
    }
}

/// A sealed value and the id of the key that sealed it (stored beside it).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Arc<str>,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({}, {} bytes)", self.key_id, self.bytes.len())
    }
}

/// Why a stored value does not open. Names the row and the key, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{at} is sealed under key {key_id}, which WALLET_ENCRYPTION_KEYS does not hold")]
    MissingKey { at: String, key_id: String },
    #[error("{at} does not open with key {key_id}: altered, or copied from another row")]
    Rejected { at: String, key_id: String },
}

/// The key of the fingerprints that find "the same card" without its token. Random,
/// made once, stored wrapped by a data key (re-wrapped by rotation, never replaced:
/// every stored fingerprint depends on it).
pub struct FingerprintKey(Zeroizing<[u8; 32]>);

impl FingerprintKey {
    pub fn generate() -> Self {
        Self(super::keys::random_bytes::<32>())
    }

    /// From its unwrapped bytes; `None` unless there are exactly 32.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(key)))
    }

    pub fn expose(&self) -> &[u8] {
        self.0.as_slice()
    }
}

struct Inner {
    data: DataKeys,
    fingerprint: FingerprintKey,
    /// Key ids that stored rows needed and the keyring lacked.
    missing: Mutex<BTreeSet<String>>,
}

/// Data keys plus the fingerprint key. Cheap to clone; prints key ids only.
#[derive(Clone)]
pub struct Keyring {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Keyring").field(&self.inner.data).finish()
    }
}

impl Keyring {
    pub fn new(data: DataKeys, fingerprint: FingerprintKey) -> Self {
        Self {
            inner: Arc::new(Inner {
                data,
                fingerprint,
                missing: Mutex::default(),
            }),
        }
    }

    pub fn data_keys(&self) -> &DataKeys {
        &self.inner.data
    }

    pub fn active_id(&self) -> &str {
        self.inner.data.active_id()
    }

    /// Seals `plaintext` for `at` under the active key.
    pub fn seal(&self, plaintext: &[u8], at: Row<'_>) -> Sealed {
        self.inner.data.seal(plaintext, at)
    }

    pub fn seal_secret(&self, secret: &Secret, at: Row<'_>) -> Sealed {
        self.seal(secret.expose().as_bytes(), at)
    }

    /// Opens a value stored at `at` under key `key_id`. A key the keyring lacks is
    /// remembered for `/readyz` ([`Self::missing_keys`]).
    pub fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        at: Row<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        match self.inner.data.open(key_id, sealed, at) {
            Err(err @ OpenError::MissingKey { .. }) => {
                let mut missing = self.inner.missing.lock().expect("missing keys");
                missing.insert(key_id.to_owned());
                Err(err)
            }
            other => other,
        }
    }

    /// [`Self::open`] for text secrets (tokens, gateway secrets).
    pub fn open_secret(
        &self,
        key_id: &str,
        sealed: &[u8],
        at: Row<'_>,
    ) -> Result<Secret, OpenError> {
        let bytes = self.open(key_id, sealed, at)?;
        std::str::from_utf8(&bytes)
            .map(Secret::new)
            .map_err(|_| OpenError::Rejected {
                at: at.to_string(),
                key_id: key_id.to_owned(),
            })
    }

    /// "Which card": HMAC-SHA256 over the gateway id and the payment source token,
    /// each length-prefixed so no two pairs give the same input.
    pub fn fingerprint(&self, gateway_id: &str, token: &Secret) -> Fingerprint {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.inner.fingerprint.expose());
        let mut mac = hmac::Context::with_key(&key);
        for part in [gateway_id.as_bytes(), token.expose().as_bytes()] {
            let len = u64::try_from(part.len()).unwrap_or(u64::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(part);
        }
        let tag = mac.sign();
        Fingerprint(
            tag.as_ref()
                .try_into()
                .expect("HMAC-SHA256 tags are 32 bytes"),
        )
    }

    /// Key ids that rows needed since the start and the keyring lacks.
    pub fn missing_keys(&self) -> Vec<String> {
        let missing = self.inner.missing.lock().expect("missing keys");
        missing.iter().cloned().collect()
    }
}

impl DataKeys {
    /// Seals under the active key (the fingerprint key itself is stored this way,
    /// before a [`Keyring`] exists).
    pub fn seal(&self, plaintext: &[u8], at: Row<'_>) -> Sealed {
        let aad = at.aad(self.active_id());
        let (key_id, bytes) = self.seal_raw(plaintext, &aad);
        Sealed { key_id, bytes }
    }

    /// Opens a value stored at `at` under key `key_id`.
    pub fn open(
        &self,
        key_id: &str,
        sealed: &[u8],
        at: Row<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        match self.open_raw(key_id, sealed, &at.aad(key_id)) {
            None => {
                let (at, key_id) = at_text_key(at, key_id);
                Err(OpenError::MissingKey { at, key_id })
            }
            Some(None) => {
                let (at, key_id) = at_text_key(at, key_id);
                Err(OpenError::Rejected { at, key_id })
            }
            Some(Some(plaintext)) => Ok(plaintext),
        }
    }
}

fn at_text_key(at: Row<'_>, key_id: &str) -> (String, String) {
    (at.to_string(), key_id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(text: &str) -> Keyring {
        let keys = DataKeys::parse(&Secret::new(text)).expect("keys");
        Keyring::new(keys, FingerprintKey::from_bytes(&[9; 32]).unwrap())
    }

    fn row(id: &str) -> Row<'_> {
        Row {
            table: "customer_payment_sources",
            column: "payment_source_token",
            id,
        }
    }

    #[test]
    fn a_value_sealed_for_one_row_does_not_open_in_another() {
        let keys = keyring(DataKeys::generate_entry("k1").expose());
        let sealed = keys.seal_secret(&Secret::new("pst_1"), row("QgDXpwsqDx"));
        let opened = keys
            .open_secret("k1", &sealed.bytes, row("QgDXpwsqDx"))
            .unwrap();
        assert_eq!(opened.expose(), "pst_1");
        let elsewhere = keys.open_secret("k1", &sealed.bytes, row("AAAAAAAAAA"));
        assert!(matches!(elsewhere, Err(OpenError::Rejected { .. })));
        let other_column = Row {
            column: "customer_token",
            ..row("QgDXpwsqDx")
        };
        assert!(keys.open("k1", &sealed.bytes, other_column).is_err());
        assert!(keys.missing_keys().is_empty());
    }

    #[test]
    fn a_missing_key_is_named_and_remembered() {
        let keys = keyring(DataKeys::generate_entry("k2").expose());
        let err = keys.open("k1", b"\x01", row("QgDXpwsqDx")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "customer_payment_sources.payment_source_token of row QgDXpwsqDx is sealed \
             under key k1, which WALLET_ENCRYPTION_KEYS does not hold"
        );
        assert_eq!(keys.missing_keys(), ["k1"]);
    }

    #[test]
    fn fingerprints_depend_on_gateway_token_and_fingerprint_key_only() {
        let one = keyring(DataKeys::generate_entry("k1").expose());
        let other_data_key = keyring(DataKeys::generate_entry("k2").expose());
        let token = Secret::new("tok_1");
        assert_eq!(
            one.fingerprint("gw", &token),
            other_data_key.fingerprint("gw", &token)
        );
        assert_ne!(
            one.fingerprint("gw", &token),
            one.fingerprint("gw2", &token)
        );
        assert_ne!(
            one.fingerprint("gw", &token),
            one.fingerprint("gw", &Secret::new("tok_2"))
        );
        assert_ne!(
            one.fingerprint("ab", &Secret::new("c")),
            one.fingerprint("a", &Secret::new("bc"))
        );
    }
}
