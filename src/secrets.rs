//! Secret settings come from the environment or from a file, never from the command
//! line, where every user of the machine can read them (`ps`, `/proc/PID/cmdline`) and
//! shells keep them in their history (docs/interface.md, secrets).
//!
//! One rule for every secret setting `VAR`: the variable `VAR` holds the secret itself,
//! or a file holds it, named by a `--…-file` flag or by the variable `VAR_FILE` (the
//! form container orchestrators mount secrets in). Giving both is an error.
//!
//! A URL setting may carry a password: it is only ever printed or logged through
//! [`redact_url`].

use crate::domain::Secret;
use anyhow::{Context, bail};
use std::path::Path;

/// The secret `var` names: the variable's value, or the content of `file` (the setting's
/// `--…-file` flag or `VAR_FILE`), without its trailing line break. `None` when neither
/// is given; an empty variable counts as not given. The error names the variable or the
/// file, never the value.
pub fn from_env_or_file(var: &str, file: Option<&Path>) -> anyhow::Result<Option<Secret>> {
    let value = match std::env::var(var) {
        Ok(value) => Some(value).filter(|value| !value.is_empty()),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => bail!("{var} is not valid UTF-8"),
    };
    match (value, file) {
        (Some(_), Some(_)) => {
            bail!("{var} and {var}_FILE are both set; give the secret one way")
        }
        (Some(value), None) => Ok(Some(Secret::new(value))),
        (None, Some(path)) => read_file(var, path).map(Some),
        (None, None) => Ok(None),
    }
}

/// The secret in `path`: its text without the line break editors and `echo` add.
fn read_file(var: &str, path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {var}_FILE {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        bail!("{var}_FILE {} is empty", path.display());
    }
    Ok(Secret::new(secret))
}

/// `url` with its password replaced by `***` (docs/interface.md, secrets), for every URL of a
/// comma-separated list: the only form in which a URL setting is ever printed or logged.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return redact_password_parameter(url);
    };
    let (scheme, rest) = (&url[..scheme_end], &url[scheme_end + 3..]);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let redacted = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{scheme}://{}:***@{}", &rest[..colon], &rest[at + 1..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    redact_password_parameter(&redacted)
}

/// Postgres also takes the password as a query parameter (`?password=...`).
fn redact_password_parameter(url: &str) -> String {
    let Some(query_start) = url.find('?') else {
        return url.to_owned();
    };
    let (base, query) = url.split_at(query_start + 1);
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    // Each test reads its own variable: tests run on several threads of one process.

    #[test]
    fn a_file_gives_its_text_without_the_trailing_line_break() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "s3cr3t value").unwrap();
        let secret = from_env_or_file("WALLET_TEST_SECRET_A", Some(file.path())).unwrap();
        assert_eq!(secret.unwrap().expose(), "s3cr3t value");
    }

    #[test]
    fn nothing_given_is_none_and_an_empty_file_is_an_error() {
        assert!(
            from_env_or_file("WALLET_TEST_SECRET_B", None)
                .unwrap()
                .is_none()
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = from_env_or_file("WALLET_TEST_SECRET_B", Some(file.path())).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let path = Path::new("/nonexistent/wallet-secret");
        let err = from_env_or_file("WALLET_TEST_SECRET_C", Some(path)).unwrap_err();
        assert!(
            format!("{err:#}").contains("WALLET_TEST_SECRET_C_FILE /nonexistent/wallet-secret"),
            "{err:#}"
        );
    }

    #[test]
    fn passwords_in_urls_are_replaced() {
        assert_eq!(
            redact_url("amqp://guest:s3cr:et@rabbit:5672/%2f"),
            "amqp://guest:***@rabbit:5672/%2f"
        );
        assert_eq!(
            redact_url("amqp://a:p1@n1:5672,amqp://a:p2@n2:5672/v"),
            "amqp://a:***@n1:5672,amqp://a:***@n2:5672/v"
        );
        assert_eq!(
            redact_url("postgres://u@db/w?sslmode=require&password=hunter2"),
            "postgres://u@db/w?sslmode=require&password=***"
        );
        assert_eq!(redact_url("postgres://db/w"), "postgres://db/w");
        assert_eq!(redact_url("amqp://user@host/"), "amqp://user@host/");
    }
}
