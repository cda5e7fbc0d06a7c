//! wallet-worker: saves customers' external payment sources into their wallet and reuses
//! them, driven by RabbitMQ messages, with Postgres as the store of record.
//!
//! A message reads top to bottom: [`broker`] receives → [`domain`] parses → a
//! [`handlers`] module decides → [`store`] commits (state, inbox and outbox in one
//! transaction) → [`broker`] acks, and the outbox relay publishes the events.

pub mod admin;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dead_letter_view;
pub mod domain;
pub mod faults;
pub mod gateway;
pub mod handlers;
pub mod html;
pub mod loadgen;
pub mod metrics;
pub mod secrets;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod worker;
