//! Integration tests of the worker against the real Postgres and RabbitMQ on this
//! machine; the third-party gateway is a wiremock stub. One binary, one module per area.

mod access;
mod accounting;
mod helpers;
mod process;
mod proxy;

mod admin;
mod attach;
mod circuit;
mod crash;
mod dlq;
mod loadgen;
mod malformed;
mod outage;
mod outbox;
mod restart;
mod retention;
mod retries;
mod save;
mod secrets;
mod shutdown;
