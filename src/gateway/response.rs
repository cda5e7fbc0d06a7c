//! How a `token_url` answer is read and classified (docs/interface.md, the token_url call): tokens, a permanent
//! refusal, or a transient failure worth retrying. No error text ever carries a body,
//! a token or a secret (docs/interface.md, secrets).

use crate::domain::commands::{check_metadata, check_token};
use crate::domain::limits::MAX_TOKEN_LEN;
use crate::domain::{ErrorKind, Secret};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Largest answer read from a gateway; a bigger one is refused unread.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `Retry-After` honoured, so one gateway cannot park a worker for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const MAX_CODE_LEN: usize = 64;
const MAX_MESSAGE_LEN: usize = 256;

/// The reusable tokens a gateway returned. `Debug` shows no token (they are `Secret`s).
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    pub customer_token: Secret,
    pub payment_source_token: Secret,
    pub metadata: Map<String, Value>,
}

/// A failed `token_url` call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Worth retrying later: the gateway may answer next time.
    #[error("gateway unavailable: {detail}")]
    Transient {
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The gateway said no, or answered something unusable: retrying cannot help.
    #[error("gateway refused ({code}): {message}")]
    Refused { code: String, message: String },
}

impl GatewayError {
    /// The failure kind of a call that may pass next time; `None` for a refusal, which
    /// is the gateway's answer rather than a failure.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Transient { .. } => Some(ErrorKind::GatewayUnavailable),
            Self::Refused { .. } => None,
        }
    }

    /// Worth calling again ([`ErrorKind::is_transient`] decides).
    pub fn is_transient(&self) -> bool {
        self.kind().is_some_and(ErrorKind::is_transient)
    }

    /// How long the gateway asked us to wait (already capped at [`MAX_RETRY_AFTER`]).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Refused { .. } => None,
        }
    }

    pub(crate) fn transient(detail: String) -> Self {
        Self::Transient {
            detail,
            retry_after: None,
        }
    }

    pub(crate) fn refused(code: &str, message: impl Into<String>) -> Self {
        Self::Refused {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// Replaces any occurrence of `needles` (the request's token, the gateway secret) in
    /// text that came from the gateway: a gateway echoing them must not leak them.
    pub(crate) fn scrubbed(self, needles: &[&str]) -> Self {
        let scrub = |mut text: String| {
            for needle in needles.iter().filter(|n| n.len() >= 4) {
                text = text.replace(needle, "[redacted]");
            }
            text
        };
        match self {
            Self::Refused { code, message } => Self::Refused {
                code: scrub(code),
                message: scrub(message),
            },
            transient => transient,
        }
    }
}

/// A transport failure, described without reqwest's text (which may carry the URL's
/// query) — only its kind and the gateway id.
pub(crate) fn transport_error(gateway: &str, error: &reqwest::Error) -> GatewayError {
    if error.is_timeout() {
        GatewayError::transient(format!("timeout calling {gateway}"))
    } else if error.is_connect() {
        GatewayError::transient(format!("connection to {gateway} failed"))
    } else if error.is_builder() {
        GatewayError::refused(
            "invalid_request",
            format!("the request to {gateway} could not be built"),
        )
    } else {
        GatewayError::transient(format!("request to {gateway} failed"))
    }
}

/// Classifies a response, reading at most [`MAX_RESPONSE_BYTES`] of its body.
pub(crate) async fn interpret(
    gateway: &str,
    mut response: Response,
) -> Result<Tokens, GatewayError> {
    let status = response.status();
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        return Err(GatewayError::Transient {
            detail: format!("HTTP {} from {gateway}", status.as_u16()),
            retry_after: retry_after(response.headers()),
        });
    }
    let body = read_bounded(&mut response)
        .await
        .map_err(|e| transport_error(gateway, &e))?;
    classify(gateway, status, body.as_deref())
}

/// `Retry-After` in whole seconds (the HTTP-date form is ignored), capped.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry_after_value(value, chrono::Utc::now())
}

/// `Retry-After` as delay-seconds or as an HTTP-date (RFC 9110 §10.2.3), capped at
/// [`MAX_RETRY_AFTER`]; a date in the past means "now".
fn retry_after_value(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The body, or `None` when it is larger than the limit (known from `Content-Length`
/// or found while reading chunk by chunk, never buffering more than the limit).
async fn read_bounded(response: &mut Response) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

#[derive(Deserialize)]
struct Answer {
    success: Option<bool>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct Granted {
    customer_token: Option<String>,
    payment_source_token: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

/// The token_url rules (docs/interface.md) on a fully read answer; `body` is `None` when it was too large.
pub(crate) fn classify(
    gateway: &str,
    status: StatusCode,
    body: Option<&[u8]>,
) -> Result<Tokens, GatewayError> {
    if !status.is_success() {
        let answer = body.and_then(|b| serde_json::from_slice::<Answer>(b).ok());
        return Err(http_failure(gateway, status, answer));
    }
    let invalid = |why: &str| invalid(gateway, why);
    let Some(body) = body else {
        return Err(invalid("answered more than 64 KiB"));
    };
    match serde_json::from_slice::<Answer>(body) {
        Err(_) => Err(invalid("answered something that is not the expected JSON")),
        Ok(Answer {
            success: Some(false),
            data,
        }) => Err(refusal(data)),
        Ok(Answer {
            success: Some(true),
            data: Some(data),
        }) => granted(gateway, data),
        Ok(_) => Err(invalid("answered without success: true and data")),
    }
}

/// A gateway answer that is not a success: a refusal it explains, else its status.
fn http_failure(gateway: &str, status: StatusCode, answer: Option<Answer>) -> GatewayError {
    match answer {
        Some(Answer {
            success: Some(false),
            data,
        }) => refusal(data),
        _ if status.is_redirection() => GatewayError::refused(
            &format!("http_{}", status.as_u16()),
            format!("{gateway} answered a redirect that is not followed"),
        ),
        _ => GatewayError::refused(
            &format!("http_{}", status.as_u16()),
            format!("HTTP {} from {gateway}", status.as_u16()),
        ),
    }
}

fn invalid(gateway: &str, why: &str) -> GatewayError {
    GatewayError::refused("invalid_response", format!("{gateway} {why}"))
}

/// The tokens and metadata of a `success: true` answer's `data`.
fn granted(gateway: &str, data: Value) -> Result<Tokens, GatewayError> {
    let invalid = |why: &str| invalid(gateway, why);
    let granted: Granted =
        serde_json::from_value(data).map_err(|_| invalid("answered malformed tokens"))?;
    // The gateway's answer is input too: bounded and storable (no NUL, no
    // control characters), checked by the same rules as inbound messages.
    let token = |value: Option<String>, name: &str| match value {
        Some(t) if !t.is_empty() && t.len() <= MAX_TOKEN_LEN => {
            let t = Secret::new(t);
            check_token(&t, name).map_err(|r| invalid(&format!("answered a {r}")))?;
            Ok(t)
        }
        Some(t) if !t.is_empty() => Err(invalid(&format!(
            "answered a {name} over {MAX_TOKEN_LEN} bytes"
        ))),
        _ => Err(invalid(&format!("answered no {name}"))),
    };
    // Stored, listed and published: no field named like a secret is kept.
    let mut metadata = granted.metadata.unwrap_or_default();
    crate::domain::secret::drop_secret_fields(&mut metadata);
    check_metadata(&metadata, "metadata").map_err(|r| invalid(&format!("answered {r}")))?;
    Ok(Tokens {
        customer_token: token(granted.customer_token, "customer_token")?,
        payment_source_token: token(granted.payment_source_token, "payment_source_token")?,
        metadata,
    })
}

/// `{"error": {"code", "message"}}` from a `success: false` answer, bounded and printable.
fn refusal(data: Option<Value>) -> GatewayError {
    let error = data.as_ref().and_then(|d| d.get("error"));
    let field = |name: &str, max: usize| {
        let text = error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default();
        text.chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
    };
    let code = Some(field("code", MAX_CODE_LEN)).filter(|c| !c.is_empty());
    let message = Some(field("message", MAX_MESSAGE_LEN)).filter(|m| !m.is_empty());
    GatewayError::Refused {
        code: code.unwrap_or_else(|| "gateway_refused".into()),
        message: message.unwrap_or_else(|| "the gateway refused without a reason".into()),
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
