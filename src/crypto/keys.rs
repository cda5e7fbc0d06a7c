//! The operator's data keys: `ID:BASE64,ID:BASE64…` (32-byte keys, standard base64),
//! the first active, from `WALLET_ENCRYPTION_KEYS` or the file `WALLET_ENCRYPTION_KEYS_FILE`
//! names (docs/operations.md, key management). Never from the command line.

use crate::domain::Secret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN as GCM_NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Prk};
use ring::rand::{SecureRandom, SystemRandom};
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
/// Bytes of the random salt each seal derives its own AES key from.
const SALT_LEN: usize = 24;
/// HKDF's `info` prefix: keys derived for sealing rows and nothing else.
const DERIVE_LABEL: &[u8] = b"wallet-worker.seal.v1";

/// Why the keys cannot be used. Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{KEYS_VAR} is not set (nor {KEYS_VAR}_FILE): the worker needs its data-encryption keys"
    )]
    Unset,
    /// Both the variable and its file given, or the file unreadable.
    #[error(transparent)]
    Source(#[from] anyhow::Error),
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

/// One data key, held as an HKDF pseudorandom key (the key is uniformly random, so it
/// needs no extraction step).
struct DataKey {
    id: Arc<str>,
    prk: Prk,
}

impl DataKey {
    /// The AES-256-GCM key for one seal: HKDF-expand of the data key with the seal's
    /// random salt. Each derived key seals one value, so its fixed nonce is never reused.
    fn derive(&self, salt: &[u8]) -> LessSafeKey {
        let info = [DERIVE_LABEL, salt];
        let okm = self
            .prk
            .expand(&info, &AES_256_GCM)
            .expect("HKDF-SHA256 yields 32 bytes");
        LessSafeKey::new(UnboundKey::from(okm))
    }
}

/// Each derived key seals exactly one value.
fn single_use_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0; GCM_NONCE_LEN])
}

/// `N` bytes from the operating system's generator.
pub(super) fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    SystemRandom::new()
        .fill(bytes.as_mut_slice())
        .expect("the operating system's random generator works");
    bytes
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
        let file = std::env::var_os(format!("{KEYS_VAR}_FILE")).map(std::path::PathBuf::from);
        crate::secrets::from_env_or_file(KEYS_VAR, file.as_deref())?
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
            if bytes.len() != KEY_LEN {
                return Err(KeyError::BadKey { id: id.to_owned() });
            }
            keys.push(DataKey {
                id: id.into(),
                prk: Prk::new_less_safe(HKDF_SHA256, &bytes),
            });
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys: keys.into() })
    }

    /// A fresh random key in the form [`Self::parse`] reads: `ID:BASE64`.
    pub fn generate_entry(id: &str) -> Secret {
        let key = random_bytes::<KEY_LEN>();
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
    /// Layout: version byte, 24-byte random salt, AES-256-GCM ciphertext with its
    /// 16-byte tag, under a key derived from the data key and the salt.
    pub(super) fn seal_raw(&self, plaintext: &[u8], aad: &[u8]) -> (Arc<str>, Vec<u8>) {
        let key = &self.keys[0];
        let salt = random_bytes::<SALT_LEN>();
        let mut out = Vec::with_capacity(1 + SALT_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(VERSION);
        out.extend_from_slice(salt.as_slice());
        let mut body = plaintext.to_vec();
        key.derive(salt.as_slice())
            .seal_in_place_append_tag(single_use_nonce(), Aad::from(aad), &mut body)
            .expect("AES-256-GCM seals any value a row can hold");
        out.extend_from_slice(&body);
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
            [VERSION, rest @ ..] if rest.len() >= SALT_LEN => {
                let (salt, body) = rest.split_at(SALT_LEN);
                let mut body = Zeroizing::new(body.to_vec());
                let len = key
                    .derive(salt)
                    .open_in_place(single_use_nonce(), Aad::from(aad), &mut body)
                    .ok()
                    .map(|plain| plain.len());
                len.map(|len| {
                    body.truncate(len);
                    body
                })
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
