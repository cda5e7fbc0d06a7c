//! The nodes of one RabbitMQ cluster, from a comma-separated `AMQP_URL` (docs/interface.md, AMQP topology):
//! connect to the first that answers, and after a node went away, to the next one.

use crate::secrets::redact_url;
use lapin::Connection;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long one node may take to accept a connection before the next one is tried: a
/// node that is down refuses at once, one that hangs must not hold up the others.
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The URLs of `AMQP_URL`, in the order given.
#[derive(Clone)]
pub struct Nodes {
    urls: Vec<String>,
}

/// One node of the list. Prints (`Display` and `Debug`) with its password redacted.
#[derive(Clone)]
pub struct Node {
    /// Its position in `AMQP_URL`, where the next attempt after it starts.
    index: usize,
    url: String,
}

impl Nodes {
    /// Splits `list` at commas; blanks around URLs are ignored.
    pub fn parse(list: &str) -> Self {
        let urls: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            // Let the connection attempt report the bad setting.
            return Self {
                urls: vec![list.to_owned()],
            };
        }
        Self { urls }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Every node once, round-robin from position `first` (taken modulo the length).
    pub fn starting_at(&self, first: usize) -> impl Iterator<Item = Node> + '_ {
        let len = self.urls.len();
        (0..len).map(move |k| {
            let index = (first + k) % len;
            Node {
                index,
                url: self.urls[index].clone(),
            }
        })
    }

    /// Connects to the first node, from position `first` on, that accepts a connection.
    pub async fn connect_from(
        &self,
        first: usize,
        role: &str,
    ) -> anyhow::Result<(Connection, Node)> {
        let mut failures = Unanswered::default();
        for node in self.starting_at(first) {
            match node.connect(role).await {
                Ok(connection) => return Ok((connection, node)),
                Err(err) => failures.push(&node, &err),
            }
        }
        Err(failures.into_error())
    }
}

impl Node {
    /// Position in `AMQP_URL`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The URL with its password replaced by `***`: the only form ever shown.
    pub fn redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// Connects within [`NODE_CONNECT_TIMEOUT`].
    pub async fn connect(&self, role: &str) -> anyhow::Result<Connection> {
        match tokio::time::timeout(NODE_CONNECT_TIMEOUT, super::connect(&self.url, role)).await {
            Ok(connected) => Ok(connected?),
            Err(_) => anyhow::bail!("no answer within {NODE_CONNECT_TIMEOUT:?}"),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({}, {})", self.index, self.redacted())
    }
}

/// Why each node of one round was passed over, for the one error of the round.
#[derive(Default)]
pub struct Unanswered(Vec<String>);

impl Unanswered {
    pub fn push(&mut self, node: &Node, err: &anyhow::Error) {
        self.0.push(format!("{node}: {err:#}"));
    }

    pub fn into_error(self) -> anyhow::Error {
        anyhow::anyhow!("no broker node answered ({})", self.0.join("; "))
    }
}

/// Connects to the first node of the comma-separated `urls` that answers, in order;
/// returns the connection and the node used. Every user of `AMQP_URL` connects with it.
pub async fn connect_any(urls: &str, role: &str) -> anyhow::Result<(Connection, Node)> {
    Nodes::parse(urls).connect_from(0, role).await
}

/// The node the worker is connected to right now, for `/readyz` and the logs.
#[derive(Clone, Default)]
pub struct BrokerLink(Arc<RwLock<Option<Node>>>);

impl BrokerLink {
    pub fn connected(&self, node: &Node) {
        *self.0.write().expect("broker link lock") = Some(node.clone());
    }

    pub fn disconnected(&self) {
        *self.0.write().expect("broker link lock") = None;
    }

    /// The current node, redacted; `None` while disconnected.
    pub fn node(&self) -> Option<String> {
        self.0
            .read()
            .expect("broker link lock")
            .as_ref()
            .map(Node::redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_tried_round_robin_from_the_given_position() {
        let nodes = Nodes::parse("amqp://a:p@n1:1, amqp://a:p@n2:2,amqp://a:p@n3:3,");
        assert_eq!(nodes.len(), 3);
        let order: Vec<usize> = nodes.starting_at(2).map(|n| n.index()).collect();
        assert_eq!(order, [2, 0, 1]);
        let order: Vec<usize> = nodes.starting_at(3).map(|n| n.index()).collect();
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn a_node_prints_without_its_password() {
        let node = Nodes::parse("amqp://guest:s3cret@127.0.0.1:5673/%2f")
            .starting_at(0)
            .next()
            .expect("one node");
        assert_eq!(node.to_string(), "amqp://guest:***@127.0.0.1:5673/%2f");
        assert!(!format!("{node:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn connect_any_names_every_node_it_tried_without_passwords() {
        let err = connect_any(
            "amqp://u:pw1@127.0.0.1:1/%2f,amqp://u:pw2@127.0.0.1:2/%2f",
            "test",
        )
        .await
        .expect_err("nothing listens on ports 1 and 2");
        let message = format!("{err:#}");
        assert!(message.contains("127.0.0.1:1") && message.contains("127.0.0.1:2"));
        assert!(!message.contains("pw1") && !message.contains("pw2"));
    }
}
