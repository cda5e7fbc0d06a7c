//! wallet-worker: saves customers' external payment sources into their wallet and reuses
//! them, driven by RabbitMQ messages, with Postgres as the store of record.
//!
//! A message reads top to bottom: [`broker`] receives → [`domain`] parses → a
//! [`handlers`] module decides → [`store`] commits (state, inbox and outbox in one
//! transaction) → [`broker`] acks, and the outbox relay publishes the events.
//!
//! The crate has three parts. The worker library is every module of the first group. The
//! command line ([`config`]'s clap tree, the [`cli`] subcommands) turns flags into the
//! library's plain settings; no library module imports it. The [`tools`] — load
//! generator, gateway simulator, load-test charts, demo — sit beside the worker: they use
//! the library as a client would, and the worker never imports them (a unit test in
//! `tools.rs` reads the source tree to check both fences).

pub mod admin;
pub mod backoff;
pub mod broker;
pub mod crypto;
pub mod dead_letter_view;
pub mod domain;
pub mod error_chain;
pub mod faults;
pub mod gateway;
pub mod handlers;
pub mod html;
pub mod metrics;
pub mod secrets;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tls;
pub mod worker;

// The command line.
pub mod cli;
pub mod config;

// Beside the worker; never imported by it.
pub mod tools;
