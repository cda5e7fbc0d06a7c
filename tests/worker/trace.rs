//! W3C trace context (docs/interface.md, trace context): the `traceparent` / `tracestate` headers of an
//! inbound message parent its delivery span and travel on to the events it causes and
//! to its token_url call; with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the spans reach an
//! OTLP/HTTP collector.
//!
//! The in-process worker runs without a tracer (the test subscriber only logs), so it
//! passes the inbound context on unchanged. The export test runs a worker process: the
//! global tracer provider belongs to a process.

use crate::helpers::*;
use crate::process::WorkerProcess;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use wallet_worker::broker::headers;
use wallet_worker::domain::TraceContext;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "vendor=abc,other=1";

fn inbound_traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

/// Properties of a message published inside the trace [`TRACE_ID`].
fn traced_props(message_id: &str) -> BasicProperties {
    let mut table = FieldTable::default();
    table.insert(
        ShortString::from("traceparent"),
        AMQPValue::LongString(inbound_traceparent().into()),
    );
    table.insert(
        ShortString::from("tracestate"),
        AMQPValue::LongString(TRACESTATE.into()),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_headers(table)
}

async fn publish_traced(w: &TestWorker, routing_key: &str, envelope: &Value) {
    crate::schemas::assert_valid(routing_key, envelope);
    let id = envelope["id"].as_str().expect("id");
    let body = serde_json::to_vec(envelope).expect("json");
    w.publish_raw(routing_key, &body, traced_props(id)).await;
}

fn event_trace(event: &Event) -> Option<TraceContext> {
    headers::trace_context(&event.properties)
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn an_inbound_traceparent_goes_on_to_the_saved_event_and_the_token_url_call() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_tr1", "cus_tr1", "tok_tr1", true);
    publish_traced(&w, "order.placed", &msg).await;

    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    let trace = event_trace(&event).expect("the event carries a traceparent");
    assert_eq!(trace.trace_id(), Some(TRACE_ID));
    // No tracer in this process: the worker passes the context on as it came.
    assert_eq!(trace.traceparent, inbound_traceparent());
    assert_eq!(trace.tracestate.as_deref(), Some(TRACESTATE));

    let requests = w.gateway_requests().await;
    assert_eq!(requests.len(), 1);
    let traceparent = header(&requests[0], "traceparent").expect("token_url traceparent");
    assert_eq!(traceparent.split('-').nth(1), Some(TRACE_ID));
    assert_eq!(header(&requests[0], "tracestate"), Some(TRACESTATE));
    w.stop().await;
}

#[tokio::test]
async fn a_malformed_message_with_a_traceparent_is_announced_in_its_trace() {
    let mut w = spawn_worker().await;
    let body =
        br#"{"id":"bad-tr","type":"wallet.save","occurred_at":"2026-11-27T16:00:00Z","data":{}}"#;
    w.publish_raw("wallet.save", body, traced_props("bad-tr"))
        .await;
    let event = w.dead_lettered_event(Some("bad-tr")).await;
    let trace = event_trace(&event).expect("wallet.dead_lettered carries a traceparent");
    assert_eq!(trace.trace_id(), Some(TRACE_ID));
    assert_eq!(trace.tracestate.as_deref(), Some(TRACESTATE));
    // The dead letter itself keeps the message's own headers.
    let dead = w.next_dead_letter().await;
    assert_eq!(
        headers::text(&dead.properties, "traceparent"),
        Some(inbound_traceparent())
    );
    w.stop().await;
}

#[tokio::test]
async fn without_a_tracer_a_message_without_trace_headers_causes_untraced_events() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let msg = order_placed("ord_tr2", "cus_tr2", "tok_tr2", true);
    w.publish("order.placed", &msg).await;
    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    assert_eq!(event_trace(&event), None);
    assert_eq!(header(&w.gateway_requests().await[0], "traceparent"), None);
    w.stop().await;
}

#[tokio::test]
async fn an_invalid_traceparent_is_not_passed_on() {
    let mut w = spawn_worker().await;
    let mut table = FieldTable::default();
    table.insert(
        ShortString::from("traceparent"),
        AMQPValue::LongString("00-not-a-trace-01".into()),
    );
    let msg = wallet_attach("ord_tr3", "pending", "cus_tr3", "QgDXpwsqDx");
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(msg["id"].as_str().unwrap().into())
        .with_headers(table);
    w.publish_raw("wallet.attach", &serde_json::to_vec(&msg).unwrap(), props)
        .await;
    let event = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.attach_rejected");
    assert_eq!(event_trace(&event), None);
    w.stop().await;
}

#[tokio::test]
async fn an_outbox_row_left_by_a_crash_is_published_with_its_trace_context() {
    let args = test_args();
    let _cleanup = Cleanup::of_worker(&args);
    let pool =
        wallet_worker::store::connect_and_migrate(&args.db.database_url, 2, args.keys.as_ref())
            .await
            .unwrap();
    let body = serde_json::json!({
        "id": "evt-traced", "type": "wallet.default_set", "occurred_at": "2026-11-27T16:00:00Z",
        "causation_id": "msg-before-crash",
        "data": { "customer_id": "cus_x", "customer_payment_source_id": "AbCdEfGh12" } });
    let traceparent = inbound_traceparent();
    let trace = Some((traceparent.as_str(), TRACESTATE));
    leave_outbox_row(&pool, "evt-traced", "wallet.default_set", &body, trace).await;
    pool.close().await;

    let mut w = spawn_worker_with(args).await;
    let event = w.next_event().await;
    assert_eq!(event.body["id"], "evt-traced");
    let trace = event_trace(&event).expect("the stored trace context");
    assert_eq!(trace.traceparent, inbound_traceparent());
    assert_eq!(trace.tracestate.as_deref(), Some(TRACESTATE));
    w.stop().await;
}

// ---- export over OTLP/HTTP from a worker process ----

/// What the collector received: one (content type, body) per POST /v1/traces.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal OTLP/HTTP collector on 127.0.0.1: records every export and answers 200.
async fn collector() -> (String, Received) {
    async fn export(State(received): State<Received>, headers: HeaderMap, body: Bytes) {
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        received.lock().unwrap().push((content_type, body.to_vec()));
    }
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn string_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Every exported span, and the service names of their resources.
fn decode(received: &Received) -> (Vec<Span>, Vec<String>) {
    let mut spans = Vec::new();
    let mut services = Vec::new();
    for (content_type, body) in received.lock().unwrap().iter() {
        assert_eq!(content_type, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            for kv in resource.attributes {
                if kv.key == "service.name"
                    && let Some(AnyValue::StringValue(name)) = kv.value.and_then(|v| v.value)
                {
                    services.push(name);
                }
            }
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    (spans, services)
}

#[tokio::test]
async fn a_worker_process_exports_the_delivery_span_in_the_inbound_trace() {
    let (url, received) = collector().await;
    let mut w = spawn_worker().await;
    w.pause_in_process_worker().await;
    w.gateway_accepts().await;
    let worker = WorkerProcess::start_with_env(&w.args, &[("OTEL_EXPORTER_OTLP_ENDPOINT", &url)]);

    let traced = order_placed("ord_tr4", "cus_tr4", "tok_tr4_secret", true);
    publish_traced(&w, "order.placed", &traced).await;
    let untraced = order_placed("ord_tr5", "cus_tr5", "tok_tr5_secret", true);
    w.publish("order.placed", &untraced).await;
    let saved = w.event_caused_by(traced["id"].as_str().unwrap()).await;
    let fresh = w.event_caused_by(untraced["id"].as_str().unwrap()).await;
    // SIGTERM: the spans still buffered are flushed before the process exits.
    assert!(worker.terminate().await.success());

    let (spans, services) = decode(&received);
    assert!(!services.is_empty(), "no span reached the collector");
    assert!(
        services.iter().all(|name| name == "wallet-worker"),
        "{services:?}"
    );

    // The delivery span is a child of the publisher's span, in its trace.
    let delivery = spans
        .iter()
        .find(|s| s.name == "delivery" && hex(&s.trace_id) == TRACE_ID)
        .expect("the delivery span of the traced message");
    assert_eq!(hex(&delivery.parent_span_id), PARENT_SPAN_ID);
    assert_eq!(
        string_attribute(delivery, "message_id").as_deref(),
        traced["id"].as_str()
    );
    // The event names the delivery span as its parent; tracestate goes on as it came.
    let trace = event_trace(&saved).expect("traceparent on wallet.saved");
    assert_eq!(
        trace.traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&delivery.span_id))
    );
    assert_eq!(trace.tracestate.as_deref(), Some(TRACESTATE));
    // The token_url call has its own span, and the gateway saw it as the parent.
    let call = spans
        .iter()
        .find(|s| s.name == "token_url" && hex(&s.trace_id) == TRACE_ID)
        .expect("the token_url span");
    assert_eq!(call.parent_span_id, delivery.span_id);
    let requests = w.gateway_requests().await;
    let request = requests
        .iter()
        .find(|r| String::from_utf8_lossy(&r.body).contains("ord_tr4"))
        .expect("the traced token_url request");
    assert_eq!(
        header(request, "traceparent"),
        Some(format!("00-{TRACE_ID}-{}-01", hex(&call.span_id)).as_str())
    );

    // Without trace headers the delivery starts a new trace, which the events carry.
    let fresh_trace = event_trace(&fresh).expect("a new trace on the untraced message's event");
    let fresh_id = fresh_trace.trace_id().expect("trace id").to_owned();
    assert_ne!(fresh_id, TRACE_ID);
    let root = spans
        .iter()
        .find(|s| s.name == "delivery" && hex(&s.trace_id) == fresh_id)
        .expect("the untraced message's delivery span");
    assert!(root.parent_span_id.is_empty(), "a root span");

    // No secret reaches the spans: not the card's tokens, nor the gateway's secret.
    let exported: Vec<u8> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| body.clone())
        .collect();
    let exported = String::from_utf8_lossy(&exported);
    for secret in [
        "tok_tr4_secret".to_owned(),
        "tok_tr5_secret".to_owned(),
        source_token_for("tok_tr4_secret"),
        customer_token_for("cus_tr4"),
        GATEWAY_SECRET.to_owned(),
    ] {
        assert!(!exported.contains(&secret), "{secret} was exported");
    }
    w.stop().await;
}
