//! Unit tests of answer classification (docs/interface.md, the token_url call).

use super::*;

fn classify_json(status: u16, body: &str) -> Result<Tokens, GatewayError> {
    let status = StatusCode::from_u16(status).expect("valid status");
    classify("acme-pay", status, Some(body.as_bytes()))
}

fn refused_code(result: Result<Tokens, GatewayError>) -> String {
    match result {
        Err(GatewayError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_successful_answer_yields_the_tokens_and_metadata() {
    let body = r#"{"success":true,"data":{"customer_token":"cus_1","payment_source_token":"pst_1","metadata":{"a":1}}}"#;
    let tokens = classify_json(200, body).expect("tokens");
    assert_eq!(tokens.customer_token.expose(), "cus_1");
    assert_eq!(tokens.payment_source_token.expose(), "pst_1");
    assert_eq!(tokens.metadata["a"], 1);
}

#[test]
fn missing_empty_or_oversized_tokens_are_an_invalid_response() {
    let long = "x".repeat(MAX_TOKEN_LEN + 1);
    for body in [
        r#"{"success":true,"data":{"customer_token":"cus_1"}}"#.to_owned(),
        r#"{"success":true,"data":{"customer_token":"","payment_source_token":"p"}}"#.to_owned(),
        format!(
            r#"{{"success":true,"data":{{"customer_token":"{long}","payment_source_token":"p"}}}}"#
        ),
        r#"{"success":true}"#.to_owned(),
        "<html>oops</html>".to_owned(),
    ] {
        assert_eq!(
            refused_code(classify_json(200, &body)),
            "invalid_response",
            "{body}"
        );
    }
    let too_large = classify("acme-pay", StatusCode::OK, None);
    assert_eq!(refused_code(too_large), "invalid_response");
}

#[test]
fn a_refusal_takes_the_gateway_code_and_message_at_any_non_transient_status() {
    let body = r#"{"success":false,"data":{"error":{"code":"card_declined","message":"no"}}}"#;
    for status in [200, 422] {
        let error = classify_json(status, body).expect_err("refused");
        assert_eq!(error, GatewayError::refused("card_declined", "no"));
    }
}

#[test]
fn a_4xx_without_an_error_body_is_refused_with_its_status_as_code() {
    assert_eq!(refused_code(classify_json(404, "not found")), "http_404");
    assert_eq!(refused_code(classify_json(302, "")), "http_302");
}

#[test]
fn retry_after_is_read_in_seconds_and_capped() {
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert(RETRY_AFTER, "3".parse().expect("header"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
    headers.insert(RETRY_AFTER, "86400".parse().expect("header"));
    assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    headers.insert(
        RETRY_AFTER,
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("header"),
    );
    // an HTTP-date long past: retry at once
    assert_eq!(retry_after(&headers), Some(Duration::ZERO));
}

#[test]
fn a_refusal_echoing_a_token_or_the_secret_is_scrubbed() {
    let error = GatewayError::refused("bad_tok_1a2b3c", "token tok_1a2b3c and whsec_x rejected");
    let scrubbed = error.scrubbed(&["tok_1a2b3c", "whsec_x"]).to_string();
    assert!(
        !scrubbed.contains("tok_1a2b3c") && !scrubbed.contains("whsec_x"),
        "{scrubbed}"
    );
}

#[test]
fn retry_after_as_an_http_date_waits_until_that_date() {
    use chrono::TimeZone;
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 29, 8, 49, 30)
        .unwrap();
    let at = "Sun, 29 Nov 2026 08:49:37 GMT";
    assert_eq!(retry_after_value(at, now), Some(Duration::from_secs(7)));
    // a date in the past: retry now; far ahead: capped
    let past = "Sun, 29 Nov 2026 08:00:00 GMT";
    assert_eq!(retry_after_value(past, now), Some(Duration::ZERO));
    let later = "Mon, 30 Nov 2026 08:00:00 GMT";
    assert_eq!(retry_after_value(later, now), Some(MAX_RETRY_AFTER));
    assert_eq!(retry_after_value("tomorrow", now), None);
}
