//! W3C Trace Context propagation (docs/interface.md, trace context), with or without a span exporter.
//!
//! A delivery's span is parented by the message's `traceparent` / `tracestate`
//! ([`parent_span`]); the code it runs reads [`current`] for what to send onward (event
//! headers, the token_url request). With a tracer installed, the delivery span joins
//! the inbound trace (or starts a new one when the message has none) and what goes
//! onward names the current span. Without one, nothing is recorded and the inbound
//! context goes onward unchanged: the worker is then transparent, and downstream spans
//! hang off the publisher's span instead of off a span nobody exported. A message
//! without valid trace headers then causes events and calls without them.

use crate::domain::TraceContext;
use crate::domain::trace::{TRACEPARENT, TRACESTATE};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The inbound trace as an OpenTelemetry context: empty when absent or invalid (the
/// propagator validates version, ids and flags).
pub fn extract(inbound: Option<&TraceContext>) -> Context {
    match inbound {
        Some(inbound) => TraceContextPropagator::new().extract(&Carrier(inbound)),
        None => Context::new(),
    }
}

/// Parents `span` by `parent` and returns the context its work runs in, to attach to
/// that work with `opentelemetry::context::FutureExt::with_context`: the span's own
/// when a tracer records it, else `parent` as it came.
pub fn parent_span(span: &tracing::Span, parent: Context) -> Context {
    // Errs without a tracer (or with the span filtered out of it): nothing to record.
    if span.set_parent(parent.clone()).is_ok() {
        let own = span.context();
        if own.span().span_context().is_valid() {
            return own;
        }
    }
    parent
}

/// The trace context to send onward from the code running now, if there is one.
pub fn current() -> Option<TraceContext> {
    inject(&Context::current())
}

/// `cx` as W3C headers; `None` when it names no valid span.
pub fn inject(cx: &Context) -> Option<TraceContext> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut headers = Headers::default();
    TraceContextPropagator::new().inject_context(cx, &mut headers);
    Some(TraceContext {
        traceparent: headers.traceparent?,
        tracestate: headers.tracestate.filter(|state| !state.is_empty()),
    })
}

struct Carrier<'a>(&'a TraceContext);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .headers()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers().map(|(name, _)| name).collect()
    }
}

#[derive(Default)]
struct Headers {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Headers {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn inbound(traceparent: &str, tracestate: Option<&str>) -> TraceContext {
        TraceContext {
            traceparent: traceparent.into(),
            tracestate: tracestate.map(str::to_owned),
        }
    }

    #[test]
    fn a_valid_inbound_context_goes_onward_unchanged_without_a_tracer() {
        let sent = inbound(PARENT, Some("vendor=abc,other=1"));
        let cx = parent_span(&tracing::Span::none(), extract(Some(&sent)));
        assert_eq!(inject(&cx), Some(sent));
    }

    #[test]
    fn an_invalid_or_missing_traceparent_gives_no_context() {
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(inject(&extract(Some(&inbound(bad, None)))), None, "{bad}");
        }
        assert_eq!(inject(&extract(None)), None);
    }

    #[test]
    fn the_trace_id_is_the_second_field() {
        assert_eq!(
            inbound(PARENT, None).trace_id(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
