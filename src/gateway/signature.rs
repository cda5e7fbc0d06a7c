//! Request signing (`X-CommerceLayer-Signature`, docs/interface.md, the token_url call) and the rule for which
//! `token_url`s may be stored at all (docs/interface.md, command line).

use crate::domain::Secret;
use base64::prelude::{BASE64_STANDARD, Engine as _};
use reqwest::Url;
use ring::hmac;
use std::net::IpAddr;

/// HMAC-SHA256 of `data` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref()
        .try_into()
        .expect("HMAC-SHA256 tags are 32 bytes")
}

/// Base64 (standard alphabet, padded) of HMAC-SHA256(body, secret): the value of
/// `X-CommerceLayer-Signature` for exactly these body bytes.
pub fn sign(body: &[u8], secret: &Secret) -> String {
    BASE64_STANDARD.encode(hmac_sha256(secret.expose().as_bytes(), body))
}

/// Whether `header_value` is the signature of `body`. The comparison is constant-time
/// (`ring::hmac::verify`), so a forger learns nothing from how long a rejection takes.
pub fn verify(body: &[u8], secret: &Secret, header_value: &str) -> bool {
    let Ok(claimed) = BASE64_STANDARD.decode(header_value.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    hmac::verify(&key, body, &claimed).is_ok()
}

/// Why a `token_url` cannot be used. Each message is one line meant for a CLI user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenUrlError {
    #[error("token_url is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("token_url must use https, not {0}")]
    Scheme(String),
    #[error(
        "token_url must use https: plain http is allowed only for a loopback host \
         (127.0.0.0/8, ::1, localhost), not {0}"
    )]
    InsecureHost(String),
    #[error(
        "token_url must not carry credentials; give the gateway secret in WALLET_GATEWAY_SECRET or --secret-file"
    )]
    Credentials,
}

/// Parses a `token_url` and accepts it only if it is `https`, or `http` to a loopback
/// host (docs/interface.md, command line): signed card data must never cross a network in clear text.
/// Credentials in the URL are refused because URLs are shown by `gateway list`.
pub fn validate_token_url(raw: &str) -> Result<Url, TokenUrlError> {
    let url = Url::parse(raw.trim()).map_err(|e| TokenUrlError::Invalid(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TokenUrlError::Credentials);
    }
    let host = url.host_str().unwrap_or_default().to_owned();
    if host.is_empty() && matches!(url.scheme(), "http" | "https") {
        return Err(TokenUrlError::Invalid("no host".into()));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&host) => Ok(url),
        "http" => Err(TokenUrlError::InsecureHost(host)),
        other => Err(TokenUrlError::Scheme(other.to_owned())),
    }
}

/// A token_url as it is shown (`gateway list`, the console): without user info, query
/// or fragment, where credentials or signed parameters may hide.
pub fn shown_token_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// `host_str` as the `url` crate normalises it: lowercase names, dotted IPv4, and IPv6
/// inside brackets.
fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_token_urls_lose_their_credentials_and_query() {
        assert_eq!(
            shown_token_url("https://user:pw@gw.example/token?key=k#f"),
            "https://gw.example/token"
        );
        assert_eq!(shown_token_url("::"), "(not a URL)");
    }

    #[test]
    fn a_signature_verifies_only_for_the_same_body_and_secret() {
        let secret = Secret::new("whsec_test");
        let signature = sign(br#"{"a":1}"#, &secret);
        assert!(verify(br#"{"a":1}"#, &secret, &signature));
        assert!(!verify(br#"{"a":2}"#, &secret, &signature));
        assert!(!verify(br#"{"a":1}"#, &Secret::new("other"), &signature));
        assert!(!verify(br#"{"a":1}"#, &secret, "not base64!"));
        assert!(!verify(br#"{"a":1}"#, &secret, ""));
    }

    #[test]
    fn the_signature_is_base64_of_the_rfc4231_hmac() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signature = sign(b"what do ya want for nothing?", &Secret::new("Jefe"));
        assert_eq!(signature, "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    }

    #[test]
    fn https_and_loopback_http_token_urls_are_accepted() {
        for ok in [
            "https://pay.example.com/token",
            "http://127.0.0.1:8080/token",
            "http://127.10.0.3/token",
            "http://[::1]:9000/token",
            "http://localhost/token",
            "http://LOCALHOST:1/token",
        ] {
            assert!(validate_token_url(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn other_token_urls_are_refused_with_a_one_line_reason() {
        let cases = [
            ("http://example.com/token", "loopback"),
            ("http://128.0.0.1/token", "loopback"),
            ("http://localhost.example.com/token", "loopback"),
            ("ftp://127.0.0.1/token", "not ftp"),
            ("not a url", "not a valid"),
            ("https://user:pw@pay.example.com/token", "credentials"),
        ];
        for (raw, expected) in cases {
            let message = validate_token_url(raw).expect_err(raw).to_string();
            assert!(message.contains(expected), "{raw}: {message}");
            assert!(!message.contains('\n'));
        }
    }
}
