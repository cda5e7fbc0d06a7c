//! The gateway client against a stub `token_url` (wiremock), and the gateway-sim.

use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wallet_worker::domain::commands::Customer;
use wallet_worker::domain::ids::{CustomerId, GatewayId, OrderId};
use wallet_worker::domain::{ExternalPayment, Order, OrderStatus, Secret};
use wallet_worker::gateway::{
    ClientSettings, GatewayClient, GatewayError, GatewayTarget, SaveRequest, Tokens, sign,
    validate_token_url, verify,
};
use wallet_worker::tools::gateway_sim::{self as sim, SimConfig, SimStats};
use wiremock::matchers::{header, method, path};
use wiremock::{Match, Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRET: &str = "whsec_test_secret";
const CARD_TOKEN: &str = "tok_1a2b3c";

struct Fixture {
    order: Order,
    customer: Customer,
    payment: ExternalPayment,
}

impl Fixture {
    fn new(card_token: &str) -> Self {
        let customer = Customer {
            id: CustomerId::stored("kWnEhpRgYD".into()),
            email: Some("jane@example.com".into()),
        };
        let payment = ExternalPayment {
            id: "yZlPsRkQvB".into(),
            gateway_id: GatewayId::stored("acme-pay".into()),
            token: Secret::new(card_token),
            metadata: Map::from_iter([("last4".to_owned(), json!("4242"))]),
        };
        let order = Order {
            id: OrderId::stored("qaMAhZkZvd".into()),
            number: Some("1234".into()),
            status: OrderStatus::stored("placed".into()),
            customer: Some(customer.clone()),
            currency_code: Some("EUR".into()),
            total_amount_cents: Some(12900),
            payment_source: None,
            save_to_wallet: true,
        };
        Self {
            order,
            customer,
            payment,
        }
    }

    fn request(&self) -> SaveRequest<'_> {
        SaveRequest {
            order: &self.order,
            customer: &self.customer,
            payment: &self.payment,
        }
    }
}

fn target(base: &str) -> GatewayTarget {
    GatewayTarget {
        id: "acme-pay".into(),
        token_url: validate_token_url(&format!("{base}/token")).expect("loopback url"),
        secret: Secret::new(SECRET),
    }
}

fn client(quick_retries: usize, request_timeout: Duration) -> GatewayClient {
    GatewayClient::new(ClientSettings {
        connect_timeout: Duration::from_millis(500),
        request_timeout,
        quick_retries,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
    })
    .expect("client")
}

fn fast_client() -> GatewayClient {
    client(3, Duration::from_secs(5))
}

fn success() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {
        "customer_token": "cus_secret_value", "payment_source_token": "pst_secret_value",
        "metadata": {"brand": "visa"}}}))
}

/// Matches only requests whose signature header is the HMAC of their body.
struct SignedBy(Secret);

impl Match for SignedBy {
    fn matches(&self, request: &Request) -> bool {
        let header = request.headers.get("x-commercelayer-signature");
        header
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| verify(&request.body, &self.0, h))
    }
}

/// Answers from a script (the last answer repeats) and records when each call came.
#[derive(Clone)]
struct Script {
    answers: Vec<ResponseTemplate>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    fn new(answers: Vec<ResponseTemplate>) -> Self {
        Self {
            answers,
            arrivals: Arc::default(),
        }
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().expect("lock").clone()
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut arrivals = self.arrivals.lock().expect("lock");
        arrivals.push(Instant::now());
        let index = (arrivals.len() - 1).min(self.answers.len() - 1);
        self.answers[index].clone()
    }
}

async fn stub(script: &Script) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(script.clone())
        .mount(&server)
        .await;
    server
}

fn refused_code(result: Result<Tokens, GatewayError>) -> String {
    match result {
        Err(GatewayError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_save_is_signed_over_its_exact_body_and_carries_the_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(header("content-type", "application/json"))
        .and(header(
            "idempotency-key",
            "wallet-save:qaMAhZkZvd:yZlPsRkQvB",
        ))
        .and(SignedBy(Secret::new(SECRET)))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    let fixture = Fixture::new(CARD_TOKEN);
    let tokens = fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect("tokens");
    assert_eq!(tokens.customer_token.expose(), "cus_secret_value");
    assert_eq!(tokens.payment_source_token.expose(), "pst_secret_value");
    assert_eq!(tokens.metadata["brand"], "visa");
    let requests = server.received_requests().await.expect("recording");
    let body: Value = requests[0].body_json().expect("json body");
    assert_eq!(
        body["data"]["attributes"]["payment_source_token"],
        CARD_TOKEN
    );
    assert_eq!(body["included"][1]["id"], "kWnEhpRgYD");
}

#[tokio::test]
async fn two_503s_then_a_200_succeed_after_three_identical_calls() {
    let script = Script::new(vec![
        ResponseTemplate::new(503),
        ResponseTemplate::new(503),
        success(),
    ]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect("tokens");
    let requests = server.received_requests().await.expect("recording");
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.body, requests[0].body);
        assert_eq!(
            request.headers.get("idempotency-key"),
            requests[0].headers.get("idempotency-key")
        );
        assert_eq!(
            request.headers.get("x-commercelayer-signature"),
            requests[0].headers.get("x-commercelayer-signature")
        );
    }
}

#[tokio::test]
async fn a_422_or_a_200_with_success_false_is_refused_after_one_call() {
    let refusal = json!({"success": false, "data": {"error": {"code": "card_declined", "message": "declined"}}});
    for status in [422, 200] {
        let script = Script::new(vec![
            ResponseTemplate::new(status).set_body_json(refusal.clone()),
        ]);
        let server = stub(&script).await;
        let fixture = Fixture::new(CARD_TOKEN);
        let result = fast_client()
            .save(&target(&server.uri()), &fixture.request())
            .await;
        assert_eq!(refused_code(result), "card_declined", "status {status}");
        assert_eq!(script.arrivals().len(), 1, "status {status}");
    }
}

#[tokio::test]
async fn retries_that_keep_failing_end_with_the_transient_error_after_four_calls() {
    let script = Script::new(vec![ResponseTemplate::new(500)]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let error = fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect_err("fails");
    assert!(error.is_transient());
    assert_eq!(
        error.to_string(),
        "gateway unavailable: HTTP 500 from acme-pay"
    );
    assert_eq!(script.arrivals().len(), 4);
}

#[tokio::test]
async fn a_429_with_retry_after_1_delays_the_next_call_by_about_a_second() {
    let busy = ResponseTemplate::new(429).insert_header("retry-after", "1");
    let script = Script::new(vec![busy, success()]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect("tokens");
    let arrivals = script.arrivals();
    assert_eq!(arrivals.len(), 2);
    let gap = arrivals[1] - arrivals[0];
    assert!(
        gap >= Duration::from_millis(900),
        "second call after {gap:?}"
    );
}

#[tokio::test]
async fn a_long_retry_after_is_handed_back_to_the_caller_instead_of_waited_for() {
    let script = Script::new(vec![
        ResponseTemplate::new(503).insert_header("retry-after", "30"),
    ]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let error = fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect_err("fails");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(script.arrivals().len(), 1);
}

#[tokio::test]
async fn a_timeout_or_a_refused_connection_is_transient() {
    let slow = Script::new(vec![success().set_delay(Duration::from_secs(2))]);
    let server = stub(&slow).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let client = client(0, Duration::from_millis(100));
    let error = client
        .save_once(&target(&server.uri()), &fixture.request())
        .await
        .expect_err("times out");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("timeout calling acme-pay"),
        "{error}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let result = client
        .save(&target(&format!("http://{address}")), &fixture.request())
        .await;
    let error = result.expect_err("refused");
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("connection to acme-pay failed"),
        "{error}"
    );
}

#[tokio::test]
async fn an_oversized_or_broken_success_answer_is_refused_as_invalid() {
    let huge = ResponseTemplate::new(200).set_body_string("x".repeat(65 * 1024));
    let broken = ResponseTemplate::new(200).set_body_string("<html>");
    for answer in [huge, broken] {
        let script = Script::new(vec![answer]);
        let server = stub(&script).await;
        let fixture = Fixture::new(CARD_TOKEN);
        let result = fast_client()
            .save(&target(&server.uri()), &fixture.request())
            .await;
        assert_eq!(refused_code(result), "invalid_response");
        assert_eq!(script.arrivals().len(), 1);
    }
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_not_followed() {
    let elsewhere = Script::new(vec![success()]);
    let other = stub(&elsewhere).await;
    let moved =
        ResponseTemplate::new(307).insert_header("location", format!("{}/token", other.uri()));
    let script = Script::new(vec![moved]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let result = fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await;
    assert_eq!(refused_code(result), "http_307");
    assert!(elsewhere.arrivals().is_empty());
}

#[test]
fn token_urls_must_be_https_unless_the_host_is_loopback() {
    for ok in [
        "https://pay.example.com/t",
        "http://127.0.0.1:1/t",
        "http://[::1]:1/t",
        "http://localhost/t",
    ] {
        assert!(validate_token_url(ok).is_ok(), "{ok}");
    }
    for bad in ["http://example.com/t", "ftp://127.0.0.1/t"] {
        assert!(validate_token_url(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn tokens_and_errors_never_print_a_token_or_the_secret() {
    let echo = json!({"success": false, "data": {"error": {"code": "bad",
        "message": format!("token {CARD_TOKEN} with key {SECRET} refused")}}});
    let script = Script::new(vec![ResponseTemplate::new(400).set_body_json(echo)]);
    let server = stub(&script).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let error = fast_client()
        .save(&target(&server.uri()), &fixture.request())
        .await
        .expect_err("refused");
    let tokens = Tokens {
        customer_token: Secret::new("cus_secret_value"),
        payment_source_token: Secret::new("pst_secret_value"),
        metadata: Map::new(),
    };
    let transient = GatewayError::Transient {
        detail: "HTTP 503 from acme-pay".into(),
        retry_after: None,
    };
    let printed = [
        format!("{tokens:?}"),
        format!("{error}"),
        format!("{error:?}"),
        format!("{transient} {transient:?}"),
        format!("{:?}", target(&server.uri())),
    ];
    for text in printed {
        for secret in [CARD_TOKEN, SECRET, "cus_secret_value", "pst_secret_value"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}

fn hmac_hex(key: &str, data: &str, len: usize) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let hex: String = ring::hmac::sign(&key, data.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex[..len].to_owned()
}

/// Starts the gateway simulator on a free port; returns its base URL, its counters and
/// the server task (which ends when `shutdown` resolves).
async fn start_sim(
    error_rate: f64,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (
    String,
    Arc<SimStats>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let config = SimConfig {
        latency: Duration::ZERO,
        error_rate,
        secret: Secret::new(SECRET),
    };
    let stats = Arc::new(SimStats::default());
    let server = tokio::spawn(sim::serve_with_stats(
        listener,
        config,
        stats.clone(),
        shutdown,
    ));
    (base, stats, server)
}

#[tokio::test]
async fn the_gateway_sim_answers_signed_requests_deterministically_and_idempotently() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (base, stats, server) = start_sim(0.0, async {
        let _ = stopped.await;
    })
    .await;

    let fixture = Fixture::new(CARD_TOKEN);
    let client = fast_client();
    let first = client
        .save(&target(&base), &fixture.request())
        .await
        .expect("tokens");
    let again = client
        .save(&target(&base), &fixture.request())
        .await
        .expect("tokens");
    let expected_customer = format!("cus_{}", hmac_hex(SECRET, "kWnEhpRgYD", 20));
    let expected_source = format!(
        "pst_{}",
        hmac_hex(SECRET, &format!("kWnEhpRgYD:{CARD_TOKEN}"), 24)
    );
    assert_eq!(first.customer_token.expose(), expected_customer);
    assert_eq!(first.payment_source_token.expose(), expected_source);
    assert_eq!(first.metadata["last4"], "4242");
    assert_eq!(first, again);
    assert_eq!(stats.replays(), 1);

    let mut declined = Fixture::new("tok_refuse_demo");
    declined.order.id = OrderId::stored("declinedOr".into());
    let result = client.save(&target(&base), &declined.request()).await;
    assert_eq!(refused_code(result), "card_declined");

    let body = fixture.request().body();
    let http = reqwest::Client::new();
    let forged = http
        .post(format!("{base}/token"))
        .header("idempotency-key", "k1")
        .header(
            "x-commercelayer-signature",
            sign(&body, &Secret::new("wrong")),
        )
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(forged.status(), 401);
    let answer: Value = forged.json().await.expect("json");
    assert_eq!(answer["data"]["error"]["code"], "invalid_signature");
    let keyless = http
        .post(format!("{base}/any/path"))
        .header(
            "x-commercelayer-signature",
            sign(&body, &Secret::new(SECRET)),
        )
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(keyless.status(), 400);
    assert_eq!(stats.signature_failures(), 1);

    let _ = stop.send(());
    server.await.expect("join").expect("served");
}

#[tokio::test]
async fn the_gateway_sim_injects_503s_that_the_client_sees_as_transient() {
    let (base, stats, _server) = start_sim(1.0, std::future::pending()).await;
    let fixture = Fixture::new(CARD_TOKEN);
    let error = fast_client()
        .save(&target(&base), &fixture.request())
        .await
        .expect_err("503");
    assert!(error.is_transient());
    assert_eq!(
        stats.errors_injected(),
        4,
        "one call and three quick retries"
    );
    assert_eq!(stats.replays(), 0, "errors are not stored");
}
