//! RabbitMQ: topology, the consumer loop (verdict → ack / retry / dead-letter, in
//! [`settle`]), the delayed-retry [`scheduler`], the publisher with confirms, the outbox
//! relay and the dead-letter intake.

pub mod acker;
pub mod amqp_json;
pub mod consumer;
pub mod dead_letter;
pub mod delivery;
pub mod dlq_depth;
pub mod headers;
pub mod intake;
pub mod nodes;
pub mod publish;
pub mod relay;
pub mod retry;
pub mod scheduler;
pub mod settle;
pub mod shared;
pub mod topology;
pub mod upgrade;
pub mod verdict;

pub use nodes::{BrokerLink, Node, Nodes, connect_any};
pub use topology::Topology;

use lapin::{Connect, Connection, ConnectionProperties};

/// Opens a connection to one node (`url` is a single URL; see [`connect_any`] for
/// `AMQP_URL`), named after its role, so ops can tell connections apart in the
/// management UI. Recovery is the caller's loop: after a connection dies every channel,
/// delivery and delivery tag of it is dropped, so nothing can be acked on a new channel.
/// `amqps://` URLs are verified against the process's trust (`crate::tls`).
pub async fn connect(url: &str, role: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("wallet-worker {role}").into());
    let runtime = lapin::runtime::default_runtime()?;
    url.connect_with_config(properties, crate::tls::amqp_config(), runtime)
        .await
}
