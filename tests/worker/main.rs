//! Integration tests of the worker against the real Postgres and RabbitMQ on this
//! machine; the third-party gateway is a wiremock stub. One binary, one module per area.

mod helpers;

mod attach;
mod malformed;
mod outbox;
mod save;
