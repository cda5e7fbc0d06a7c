//! W3C Trace Context (docs/interface.md, trace context) as plain data: what an inbound message brings and
//! what the events and gateway calls it causes carry onward.

/// Header (AMQP and HTTP) naming the trace and the span that caused this work.
pub const TRACEPARENT: &str = "traceparent";
/// Header with vendor-specific trace data that travels with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// The two W3C Trace Context headers, as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`.
    pub traceparent: String,
    /// Absent when the trace carries no vendor data.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace id (32 lowercase hex digits), the part every hop keeps.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.split('-').nth(1)
    }

    /// The headers to send, `tracestate` only when present.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent.as_str()))
            .chain(self.tracestate.as_deref().map(|state| (TRACESTATE, state)))
    }
}
