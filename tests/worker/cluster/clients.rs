//! Clients of the cluster that survive its nodes going away, as a pipeline's would: a
//! publisher with confirms that republishes what was not confirmed on the next node,
//! and an event reader on a replicated (quorum) queue that reconnects the same way.
//! Every broker step of the reader is bounded and watches its stop token: a node that
//! accepts a connection but never answers (booting, or cut off from the majority) makes
//! it move on instead of hanging the test.

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
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// The outcome events the ledger counts.
const OUTCOMES: [&str; 2] = ["wallet.saved", "wallet.save_failed"];
/// Counted apart: a dead letter is not an outcome.
const DEAD_LETTERED: &str = "wallet.dead_lettered";
/// How long one broker step of the event reader (open, consume, ack) may take.
const STEP_WITHIN: Duration = Duration::from_secs(5);

/// What the publisher got the cluster to confirm.
#[derive(Debug, Default)]
pub struct Sent {
    /// Ids of confirmed messages: the only ones counted as published.
    pub confirmed: Vec<String>,
    /// Publishes of messages not confirmed at first, sent again on another node.
    pub republished: usize,
    /// Messages never confirmed within [`GIVE_UP_AFTER`].
    pub given_up: usize,
    /// Ids of the confirmed messages that were malformed on purpose (a subset of
    /// `confirmed`): each must become exactly one dead letter.
    pub malformed: Vec<String>,
}

impl Sent {
    /// The confirmed messages that should each have one outcome.
    pub fn well_formed(&self) -> Vec<String> {
        self.confirmed
            .iter()
            .filter(|id| !self.malformed.contains(id))
            .cloned()
            .collect()
    }
}

/// Messages confirmed so far, readable while the publisher runs (for a stuck report).
#[derive(Debug, Clone, Default)]
pub struct ConfirmedSoFar(Arc<AtomicUsize>);

impl ConfirmedSoFar {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A publisher with confirms that moves to the next node when its node goes away.
pub struct ClusterPublisher {
    nodes: Nodes,
    exchange: String,
    /// Where the next connection attempt starts.
    first: usize,
    open: Option<(Connection, Channel, Node)>,
    confirmed: ConfirmedSoFar,
}

impl ClusterPublisher {
    pub fn new(args: &WorkerArgs) -> Self {
        Self {
            nodes: Nodes::parse(&args.amqp.amqp_url),
            exchange: args.amqp.exchange.clone(),
            first: 0,
            open: None,
            confirmed: ConfirmedSoFar::default(),
        }
    }

    /// A live view of how many messages the cluster confirmed.
    pub fn confirmed_so_far(&self) -> ConfirmedSoFar {
        self.confirmed.clone()
    }

    /// Publishes bulk saves at about `per_second`, each until confirmed, until `until`
    /// is cancelled: the load lasts as long as the fault does. With `malformed_every`,
    /// every n-th message is an envelope without a type or data (a dead letter by rule).
    pub async fn publish_saves(
        mut self,
        tag: &str,
        per_second: f64,
        malformed_every: Option<usize>,
        until: CancellationToken,
    ) -> Sent {
        let mut sent = Sent::default();
        let mut pace = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / per_second));
        for start in (0..).step_by(BATCH) {
            if until.is_cancelled() {
                break;
            }
            pace.tick().await;
            let batch = (start..start + BATCH)
                .map(|i| match malformed_every {
                    Some(n) if i % n == n - 1 => {
                        serde_json::json!({"id": format!("bad_{tag}_{i}"), "malformed": true})
                    }
                    _ => bulk_save(tag, i),
                })
                .collect();
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
                    let id = message["id"].as_str().expect("id").to_owned();
                    if message["malformed"] == true {
                        sent.malformed.push(id.clone());
                    }
                    sent.confirmed.push(id);
                    self.confirmed.0.fetch_add(1, Ordering::Relaxed);
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
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the reader saw, and where it is: what a stuck test reports.
#[derive(Debug, Default)]
pub struct Seen {
    pub ledger: Ledger,
    /// Ids of the messages `wallet.dead_lettered` named.
    pub dead_lettered: Vec<String>,
    /// The node it reads from, if it is connected.
    pub node: Option<String>,
    /// Why it last left a node.
    pub last_error: Option<String>,
}

impl ClusterEvents {
    /// Declares `<queue>.test-events` (quorum, bound to the outcomes and to
    /// `wallet.dead_lettered`) and starts reading.
    pub async fn start(args: &WorkerArgs) -> Self {
        let nodes = Nodes::parse(&args.amqp.amqp_url);
        let queue = format!("{}.test-events", args.amqp.queue);
        declare_event_queue(&nodes, &args.amqp.exchange, &queue).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(read_events(nodes, queue, seen.clone(), stop.clone()));
        Self {
            seen,
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// One line on where the reader is and what it counted.
    pub fn state(&self) -> String {
        let seen = self.seen.lock().expect("seen");
        format!(
            "reader_node={} reader_last_error={:?} completed={} dead_letter_events={}",
            seen.node.as_deref().unwrap_or("none"),
            seen.last_error,
            seen.ledger.completed(),
            seen.dead_lettered.len()
        )
    }

    /// Waits until every id of `expected` has an outcome and every id of
    /// `dead_letters` a dead-letter event, for as long as the counts keep moving: it
    /// gives up only after `stall` without progress (a loaded machine drains slowly; a
    /// stuck one does not drain at all), printing where it stopped. Then it waits a
    /// little longer, so a doubled effect would show, and stops the reader within a
    /// bounded time whatever it was doing.
    pub async fn seen_of(&self, expected: &[String], dead_letters: usize, stall: Duration) -> Seen {
        let goal = expected.len() + dead_letters;
        let (mut last, mut moved_at) = (usize::MAX, tokio::time::Instant::now());
        loop {
            let done = {
                let seen = self.seen.lock().expect("seen");
                seen.ledger.completed_of(expected) + seen.dead_lettered.len()
            };
            if done >= goal {
                break;
            }
            if done != last {
                (last, moved_at) = (done, tokio::time::Instant::now());
            } else if moved_at.elapsed() >= stall {
                eprintln!(
                    "[cluster] no progress for {} s: {done} of {goal} outcomes; {}",
                    stall.as_secs(),
                    self.state()
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.cancel();
        let task = self.task.lock().expect("reader task").take();
        if let Some(task) = task
            && tokio::time::timeout(STEP_WITHIN * 2, task).await.is_err()
        {
            eprintln!("[cluster] the event reader did not stop; left behind");
        }
        std::mem::take(&mut *self.seen.lock().expect("seen"))
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
    for key in OUTCOMES.into_iter().chain([DEAD_LETTERED]) {
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

async fn read_events(nodes: Nodes, queue: String, seen: Arc<Mutex<Seen>>, stop: CancellationToken) {
    let mut first = 0;
    while !stop.is_cancelled() {
        let connected = bounded(&stop, nodes.connect_from(first, "test-events")).await;
        let Some(Ok((connection, node))) = connected else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        first = node.index() + 1;
        seen.lock().expect("seen").node = Some(node.to_string());
        if let Err(err) = read_from(&connection, &queue, &seen, &stop).await {
            eprintln!("[cluster] event reader left {node}: {err}");
            let mut seen = seen.lock().expect("seen");
            seen.node = None;
            seen.last_error = Some(format!("{node}: {err}"));
        }
        let _ = bounded(&stop, connection.close(200, "bye".into())).await;
    }
}

/// `step`, unless it takes longer than [`STEP_WITHIN`] or the reader is stopped.
async fn bounded<T>(stop: &CancellationToken, step: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        () = stop.cancelled() => None,
        done = tokio::time::timeout(STEP_WITHIN, step) => done.ok(),
    }
}

/// A step that did not answer in time ends the reader's stay on its node.
fn answered<T>(step: Option<lapin::Result<T>>, what: &str) -> Result<T, String> {
    match step {
        Some(Ok(value)) => Ok(value),
        Some(Err(err)) => Err(format!("{what}: {err}")),
        None => Err(format!("{what}: no answer within {STEP_WITHIN:?}")),
    }
}

/// Records each event before acking it: an event delivered again counts as redelivered,
/// never as a second effect.
async fn read_from(
    connection: &Connection,
    queue: &str,
    seen: &Mutex<Seen>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let channel = answered(bounded(stop, connection.create_channel()).await, "channel")?;
    answered(
        bounded(stop, channel.basic_qos(256, BasicQosOptions::default())).await,
        "qos",
    )?;
    let consume = channel.basic_consume(
        queue.into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    let mut deliveries = answered(bounded(stop, consume).await, "consume")?;
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            next = deliveries.next() => match next {
                Some(delivery) => delivery.map_err(|err| err.to_string())?,
                None => return Err("the consumer was cancelled".into()),
            },
        };
        let event: Value = serde_json::from_slice(&delivery.data).expect("events are JSON");
        let cause = event["causation_id"].as_str().unwrap_or("").to_owned();
        {
            let mut seen = seen.lock().expect("seen");
            if delivery.routing_key.as_str() == DEAD_LETTERED {
                seen.dead_lettered.push(cause);
            } else {
                let id = event["id"].as_str().unwrap_or("").to_owned();
                seen.ledger.record(cause, id);
            }
        }
        let ack = delivery.ack(BasicAckOptions::default());
        answered(bounded(stop, ack).await, "ack")?;
    }
}
