//! Integration tests of the worker against the real Postgres and RabbitMQ on this
//! machine; the third-party gateway is a wiremock stub. One binary, one module per area.

mod access;
mod accounting;
mod browser;
mod cleanup;
mod helpers;
mod pg_counter;
mod process;
mod proxy;
mod rabbit_cluster;
mod schemas;

mod admin;
mod attach;
mod bounded_waits;
mod broker_trouble;
mod circuit;
mod cli_safety;
mod cluster;
mod console;
mod crash;
mod dashboards;
mod dead_letter_events;
#[cfg(feature = "failpoints")]
mod decisions;
mod dlq;
mod keys;
mod loadgen;
mod malformed;
mod memory;
mod outage;
mod outbox;
#[cfg(feature = "failpoints")]
mod panics;
mod restart;
mod retention;
mod retries;
mod round_trips;
mod save;
mod secret_files;
mod secrets;
mod shutdown;
mod startup;
mod tls;
mod trace;
mod upgrade;
mod upgrade_queues;
mod wallet_life;
