//! The operator's data keys: `ID:BASE64,ID:BASE64…` (32-byte keys, standard base64),
//! the first active, from `WALLET_ENCRYPTION_KEYS` or the file `WALLET_ENCRYPTION_KEYS_FILE`
//! names (docs/operations.md, key management). Never from the command line.

use crate::domain::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Where the keys come from; `<KEYS_VAR>_FILE` names a file holding the same text.
pub const KEYS_VAR: &str = "WALLET_ENCRYPTION_KEYS";
/// Bytes of a data key.
const KEY_LEN: usize = 32;
/// Longest key id: ids are stored with every row they seal.
const MAX_ID_LEN: usize = 64;
/// First byte of every sealed value: the layout below, so a later one can coexist.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// Why the keys cannot be used. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{KEYS_VAR} is not set (nor {KEYS_VAR}_FILE): the worker needs its data-encryption keys"
    )]
    Unset,
    #[error("set either {KEYS_VAR} or {KEYS_VAR}_FILE, not both")]
    Both,
    #[error("cannot read {KEYS_VAR}_FILE {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{KEYS_VAR} holds no key")]
    Empty,
    #[error("{KEYS_VAR}: entry {position} is not ID:BASE64")]
    NotAnEntry { position: usize },
    #[error("{KEYS_VAR}: entry {position} has an id that is not 1 to 64 of A-Z a-z 0-9 . _ -")]
    BadId { position: usize },
    #[error("{KEYS_VAR}: key {id} is not 32 bytes in standard base64")]
    BadKey { id: String },
    #[error("{KEYS_VAR}: key id {id} appears twice")]
    Duplicate { id: String },
}

/// One data key.
struct DataKey {
    id: Arc<str>,
    cipher: XChaCha20Poly1305,
}

/// The data keys, the first one active (it seals everything new). Cheap to clone;
/// prints its key ids only.
#[derive(Clone)]
pub struct DataKeys {
    keys: Arc<[DataKey]>,
}

impl fmt::Debug for DataKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl DataKeys {
    /// The keys from the environment: `WALLET_ENCRYPTION_KEYS`, or the file named by
    /// `WALLET_ENCRYPTION_KEYS_FILE`. `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        secret_from_env(KEYS_VAR)?
            .map(|text| Self::parse(&text))
            .transpose()
    }

    /// The keys from the environment, which must hold them.
    pub fn required_from_env() -> Result<Self, KeyError> {
        Self::from_env()?.ok_or(KeyError::Unset)
    }

    /// Parses `ID:BASE64,ID:BASE64…` (whitespace around entries is ignored, so a file
    /// may end with a newline or hold one key per line).
    pub fn parse(text: &Secret) -> Result<Self, KeyError> {
        let mut keys: Vec<DataKey> = Vec::new();
        let entries = text
            .expose()
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (index, entry) in entries.enumerate() {
            let position = index + 1;
            let (id, encoded) = entry
                .split_once(':')
                .ok_or(KeyError::NotAnEntry { position })?;
            let id = id.trim();
            if !valid_id(id) {
                return Err(KeyError::BadId { position });
            }
            if keys.iter().any(|k| &*k.id == id) {
                return Err(KeyError::Duplicate { id: id.to_owned() });
            }
            let bytes = Zeroizing::new(STANDARD.decode(encoded.trim()).unwrap_or_default());
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .ok()
                .filter(|_| bytes.len() == KEY_LEN)
                .ok_or_else(|| KeyError::BadKey { id: id.to_owned() })?;
            keys.push(DataKey {
                id: id.into(),
                cipher,
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys: keys.into() })
    }

    /// A fresh random key in the form [`Self::parse`] reads: `ID:BASE64`.
    pub fn generate_entry(id: &str) -> Secret {
        let key = Zeroizing::new(<[u8; KEY_LEN]>::generate());
        Secret::new(format!("{id}:{}", STANDARD.encode(*key)))
    }

    /// The id of the key that seals everything new.
    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.id)
    }

    pub fn holds(&self, id: &str) -> bool {
        self.keys.iter().any(|k| &*k.id == id)
    }

    /// Seals `plaintext` under the active key, binding `aad` (the row's identity).
    /// Layout: version byte, 24-byte random nonce, ciphertext with its 16-byte tag.
    pub(super) fn seal_raw(&self, plaintext: &[u8], aad: &[u8]) -> (Arc<str>, Vec<u8>) {
        let key = &self.keys[0];
        let nonce = XNonce::generate();
        let sealed = key
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message a row can hold");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        (key.id.clone(), out)
    }

    /// Opens what [`Self::seal_raw`] made under key `id`: `None` when no key has that id,
    /// `Some(None)` when the value does not open (altered, or sealed for another row).
    pub(super) fn open_raw(
        &self,
        id: &str,
        sealed: &[u8],
        aad: &[u8],
    ) -> Option<Option<Zeroizing<Vec<u8>>>> {
        let key = self.keys.iter().find(|k| &*k.id == id)?;
        let opened = match sealed {
            [VERSION, rest @ ..] if rest.len() >= NONCE_LEN => {
                let (nonce, body) = rest.split_at(NONCE_LEN);
                let nonce = XNonce::try_from(nonce).ok()?;
                key.cipher
                    .decrypt(&nonce, Payload { msg: body, aad })
                    .ok()
                    .map(Zeroizing::new)
            }
            _ => None,
        };
        Some(opened)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `VAR`, else the contents of the file `VAR_FILE` names; both set is an error (which
/// one would win is a guess an operator should not have to make).
fn secret_from_env(var: &str) -> Result<Option<Secret>, KeyError> {
    let file_var = format!("{var}_FILE");
    let direct = std::env::var(var).ok().map(Secret::new);
    let file = std::env::var_os(&file_var);
    match (direct, file) {
        (Some(_), Some(_)) => Err(KeyError::Both),
        (Some(text), None) => Ok(Some(text)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|text| Some(Secret::new(text)))
            .map_err(|source| KeyError::File {
                path: path.to_string_lossy().into_owned(),
                source,
            }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Result<DataKeys, KeyError> {
        DataKeys::parse(&Secret::new(text))
    }

    #[test]
    fn keys_parse_with_the_first_active_and_whitespace_ignored() {
        let (a, b) = (
            DataKeys::generate_entry("k2"),
            DataKeys::generate_entry("k1"),
        );
        let text = format!(" {}, \n{}\n", a.expose(), b.expose());
        let keys = keys(&text).expect("keys parse");
        assert_eq!(keys.active_id(), "k2");
        assert_eq!(keys.ids().collect::<Vec<_>>(), ["k2", "k1"]);
        assert!(keys.holds("k1") && !keys.holds("k3"));
        assert_eq!(format!("{keys:?}"), r#"DataKeys { ids: ["k2", "k1"] }"#);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_the_material() {
        let short = format!("k1:{}", STANDARD.encode([7u8; 16]));
        for (text, expected) in [
            ("", "holds no key"),
            ("c2VjcmV0c2VjcmV0", "entry 1 is not ID:BASE64"),
            ("bad id:c2VjcmV0", "entry 1 has an id"),
            (short.as_str(), "key k1 is not 32 bytes"),
            ("k1:not!base64!c2VjcmV0", "key k1 is not 32 bytes"),
        ] {
            let err = keys(text).expect_err("refused").to_string();
            assert!(err.contains(expected), "{err}");
            assert!(
                !err.contains("c2VjcmV0") && !err.contains("base64!"),
                "{err}"
            );
        }
        let entry = DataKeys::generate_entry("k1");
        let twice = format!("{},{}", entry.expose(), entry.expose());
        assert!(
            keys(&twice)
                .expect_err("refused")
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn a_sealed_value_opens_only_with_its_key_and_its_associated_data() {
        let keys = keys(&format!(
            "{},{}",
            DataKeys::generate_entry("new").expose(),
            DataKeys::generate_entry("old").expose()
        ))
        .unwrap();
        let (id, sealed) = keys.seal_raw(b"tok_123", b"row 1");
        assert_eq!(&*id, "new");
        assert!(!sealed.windows(7).any(|w| w == b"tok_123"));
        let opened = keys.open_raw("new", &sealed, b"row 1").unwrap().unwrap();
        assert_eq!(opened.as_slice(), b"tok_123");
        assert!(keys.open_raw("new", &sealed, b"row 2").unwrap().is_none());
        assert!(keys.open_raw("old", &sealed, b"row 1").unwrap().is_none());
        assert!(keys.open_raw("gone", &sealed, b"row 1").is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(keys.open_raw("new", &altered, b"row 1").unwrap().is_none());
        assert!(
            keys.open_raw("new", b"\x01short", b"row 1")
                .unwrap()
                .is_none()
        );
        assert_ne!(
            keys.seal_raw(b"tok_123", b"row 1").1,
            sealed,
            "nonces are fresh"
        );
    }
}
