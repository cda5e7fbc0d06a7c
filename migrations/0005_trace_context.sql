-- W3C trace context of the work that caused each event (docs/interface.md, trace context): the relay,
-- possibly of another process after a crash, sends it on as the event's `traceparent`
-- and `tracestate` headers. Null when that work had none.
ALTER TABLE outbox
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate  text;
