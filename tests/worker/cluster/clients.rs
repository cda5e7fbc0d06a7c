//! Clients of the cluster that survive its nodes going away, as a pipeline's would: a
//! publisher with confirms that republishes what was not confirmed on the next node,
//! and an event reader on a replicated (quorum) queue that reconnects the same way.

use crate::accounting::Ledger;
use crate::helpers::bulk_save;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wallet_worker::broker::{Node, Nodes};
use wallet_worker::config::WorkerArgs;

/// Messages published between two confirm waits.
const BATCH: usize = 25;
/// How long a confirm may take before the publish counts as failed.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);
/// How long one message may stay unconfirmed, across nodes, before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// The outcome events the ledger counts (dead letters would show up as lost).
const OUTCOMES: [&str; 2] = ["wallet.saved", "wallet.save_failed"];

/// What the publisher got the cluster to confirm.
#[derive(Debug, Default)]
pub struct Sent {
    /// Ids of confirmed messages: the only ones counted as published.
    pub confirmed: Vec<String>,
    /// Publishes of messages not confirmed at first, sent again on another node.
    pub republished: usize,
    /// Messages never confirmed within [`GIVE_UP_AFTER`].
    pub given_up: usize,
}

/// A publisher with confirms that moves to the next node when its node goes away.
pub struct ClusterPublisher {
    nodes: Nodes,
    exchange: String,
    /// Where the next connection attempt starts.
    first: usize,
    open: Option<(Connection, Channel, Node)>,
}

impl ClusterPublisher {
    pub fn new(args: &WorkerArgs) -> Self {
        Self {
            nodes: Nodes::parse(&args.amqp.amqp_url),
            exchange: args.amqp.exchange.clone(),
            first: 0,
            open: None,
        }
    }

    /// Publishes bulk saves at about `per_second`, each until confirmed, until `until`
    /// is cancelled: the load lasts as long as the fault does.
    pub async fn publish_saves(
        mut self,
        tag: &str,
        per_second: f64,
        until: CancellationToken,
    ) -> Sent {
        let mut sent = Sent::default();
        let mut pace = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / per_second));
        for start in (0..).step_by(BATCH) {
            if until.is_cancelled() {
                break;
            }
            pace.tick().await;
            let batch = (start..start + BATCH).map(|i| bulk_save(tag, i)).collect();
            self.publish_until_confirmed(batch, &mut sent).await;
        }
        if let Some((connection, _, _)) = self.open.take() {
            let _ = connection.close(200, "done".into()).await;
        }
        sent
    }

    async fn publish_until_confirmed(&mut self, mut pending: Vec<Value>, sent: &mut Sent) {
        let deadline = tokio::time::Instant::now() + GIVE_UP_AFTER;
        while !pending.is_empty() {
            if tokio::time::Instant::now() > deadline {
                sent.given_up += pending.len();
                return;
            }
            let Some(channel) = self.channel().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut confirms = Vec::with_capacity(pending.len());
            for message in &pending {
                confirms.push(publish(&channel, &self.exchange, message).await);
            }
            let mut unconfirmed = Vec::new();
            for (message, confirm) in pending.into_iter().zip(confirms) {
                let confirmed = match confirm {
                    Ok(confirm) => matches!(
                        tokio::time::timeout(CONFIRM_WITHIN, confirm).await,
                        Ok(Ok(Confirmation::Ack(None)))
                    ),
                    Err(_) => false,
                };
                if confirmed {
                    sent.confirmed
                        .push(message["id"].as_str().expect("id").to_owned());
                } else {
                    unconfirmed.push(message);
                }
            }
            if !unconfirmed.is_empty() {
                sent.republished += unconfirmed.len();
                self.move_on().await;
            }
            pending = unconfirmed;
        }
    }

    /// The open channel, or a new one on the next node that answers.
    async fn channel(&mut self) -> Option<Channel> {
        if self.open.is_none() {
            let (connection, node) = self
                .nodes
                .connect_from(self.first, "test-publisher")
                .await
                .ok()?;
            let channel = connection.create_channel().await.ok()?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .ok()?;
            self.open = Some((connection, channel, node));
        }
        self.open.as_ref().map(|(_, channel, _)| channel.clone())
    }

    /// Gives up the current node; the next connection starts after it.
    async fn move_on(&mut self) {
        if let Some((connection, _, node)) = self.open.take() {
            self.first = node.index() + 1;
            let _ = connection.close(200, "moving on".into()).await;
        }
    }
}

async fn publish(
    channel: &Channel,
    exchange: &str,
    message: &Value,
) -> lapin::Result<lapin::PublisherConfirm> {
    let id = message["id"].as_str().expect("id");
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into());
    channel
        .basic_publish(
            exchange.into(),
            "order.placed".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(message).expect("json"),
            properties,
        )
        .await
}

/// Reads the worker's outcome events from a quorum queue into a [`Ledger`], across nodes.
pub struct ClusterEvents {
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ClusterEvents {
    /// Declares `<queue>.test-events` (quorum, bound to the outcomes) and starts reading.
    pub async fn start(args: &WorkerArgs) -> Self {
        let nodes = Nodes::parse(&args.amqp.amqp_url);
        let queue = format!("{}.test-events", args.amqp.queue);
        declare_event_queue(&nodes, &args.amqp.exchange, &queue).await;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(read_events(nodes, queue, ledger.clone(), stop.clone()));
        Self { ledger, stop, task }
    }

    /// Waits until every id of `published` has an outcome (or `within` passes), then a
    /// little longer so a doubled effect would show, and returns the ledger.
    pub async fn ledger_of(self, published: &[String], within: Duration) -> Ledger {
        let deadline = tokio::time::Instant::now() + within;
        while self.ledger.lock().expect("ledger").completed_of(published) < published.len()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.ledger.lock().expect("ledger"))
    }
}

async fn declare_event_queue(nodes: &Nodes, exchange: &str, queue: &str) {
    let (connection, _) = nodes
        .connect_from(0, "test-events")
        .await
        .expect("a node answers");
    let channel = connection.create_channel().await.expect("channel");
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), options, quorum)
        .await
        .expect("event queue");
    for key in OUTCOMES {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
    let _ = connection.close(200, "declared".into()).await;
}

async fn read_events(
    nodes: Nodes,
    queue: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
) {
    let mut first = 0;
    while !stop.is_cancelled() {
        let Ok((connection, node)) = nodes.connect_from(first, "test-events").await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        first = node.index() + 1;
        if let Err(err) = read_from(&connection, &queue, &ledger, &stop).await {
            eprintln!("[cluster] event reader left {node}: {err}");
        }
        let _ = connection.close(200, "bye".into()).await;
    }
}

/// Records each event before acking it: an event delivered again counts as redelivered,
/// never as a second effect.
async fn read_from(
    connection: &Connection,
    queue: &str,
    ledger: &Mutex<Ledger>,
    stop: &CancellationToken,
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = deliveries.next() => match next {
                Some(delivery) => delivery?,
                None => return Ok(()),
            },
        };
        let event: Value = serde_json::from_slice(&delivery.data).expect("events are JSON");
        let cause = event["causation_id"].as_str().unwrap_or("").to_owned();
        let id = event["id"].as_str().unwrap_or("").to_owned();
        ledger.lock().expect("ledger").record(cause, id);
        delivery.ack(BasicAckOptions::default()).await?;
    }
}
