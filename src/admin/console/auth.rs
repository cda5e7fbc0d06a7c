//! Who may use the console, and how a state-changing request proves it came from one of
//! its own pages (docs/interface.md, admin HTTP): the admin token as the HTTP Basic password, `Origin`
//! equal to the `Host` the request was sent to, and the console's form token.

use crate::domain::Secret;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::prelude::{BASE64_STANDARD, Engine as _};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The `WWW-Authenticate` challenge of a request without the right password.
pub const CHALLENGE: &str = r#"Basic realm="wallet-worker""#;

/// Every console response carries these: no script or style but the console's own
/// files, no framing, no referrer to other sites, nothing cached (pages show dead letters).
pub const SECURITY_HEADERS: [(header::HeaderName, &str); 6] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    // Not `no-referrer`: under it a browser sends `Origin: null` with a form POST.
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
    (
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    ),
];

/// Whether `Authorization: Basic` carries `token` as its password (any user name),
/// compared in constant time.
pub fn password_matches(headers: &HeaderMap, token: &Secret) -> bool {
    let Some((scheme, encoded)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = BASE64_STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = Zeroizing::new(decoded);
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    bool::from(decoded[colon + 1..].ct_eq(token.expose().as_bytes()))
}

/// The HTTP Basic user name of the request (any is accepted; it names who acted in the
/// audit log): at most 64 printable characters, `console` when empty.
pub fn user_name(headers: &HeaderMap) -> String {
    let decoded = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, encoded)| BASE64_STANDARD.decode(encoded.trim()).ok())
        .map(Zeroizing::new);
    let name: String = decoded
        .as_ref()
        .and_then(|d| d.iter().position(|b| *b == b':').map(|colon| &d[..colon]))
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if name.trim().is_empty() {
        "console".to_owned()
    } else {
        name
    }
}

/// Whether the request's `Origin` is the site it was sent to: a browser sends `Origin`
/// with every POST, and a page of another site cannot make it ours.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let (Some(origin), Some(host)) = (text(header::ORIGIN), text(header::HOST)) else {
        return false;
    };
    ["http://", "https://"].into_iter().any(|scheme| {
        origin
            .strip_prefix(scheme)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
    })
}

/// A random value per process that every console form sends back: a form on another
/// site cannot know it. It is no credential (useless without the Basic password).
#[derive(Clone)]
pub struct FormToken(String);

impl FormToken {
    pub fn random() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    pub fn value(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, sent: &str) -> bool {
        bool::from(sent.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn the_token_is_the_basic_password_under_any_user_name() {
        let token = Secret::new("s3cret");
        let basic = |creds: &str| {
            headers(&[(
                header::AUTHORIZATION,
                &format!("Basic {}", BASE64_STANDARD.encode(creds)),
            )])
        };
        assert!(password_matches(&basic("ops:s3cret"), &token));
        assert!(password_matches(&basic(":s3cret"), &token));
        assert!(!password_matches(&basic("ops:s3cre"), &token));
        assert!(!password_matches(&basic("s3cret"), &token));
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        assert!(!password_matches(&bearer, &token));
        assert!(!password_matches(&HeaderMap::new(), &token));
    }

    #[test]
    fn the_user_name_is_what_comes_before_the_password() {
        let basic = |creds: &str| {
            headers(&[(
                header::AUTHORIZATION,
                &format!("Basic {}", BASE64_STANDARD.encode(creds)),
            )])
        };
        assert_eq!(user_name(&basic("ops:s3cret")), "ops");
        assert_eq!(user_name(&basic(":s3cret")), "console");
        assert_eq!(user_name(&basic("a\nb:x")), "ab", "no control characters");
        assert_eq!(user_name(&HeaderMap::new()), "console");
    }

    #[test]
    fn only_the_sites_own_origin_passes() {
        let host = (header::HOST, "127.0.0.1:9090");
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:9090")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "null")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }
}
