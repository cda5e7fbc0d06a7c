//! A load test's broker session: a private queue collecting the worker's completion
//! events (bound before the first publish, so none is missed) and a publisher whose
//! confirms are awaited in the background, so publishing never waits a round trip.

use super::message::Message;
use super::report::{Report, SavedSource};
use super::tracker::Tracker;
use crate::broker::publish::{PublishError, check};
use anyhow::{Context, bail};
use futures::StreamExt;
use lapin::PublisherConfirm;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer, ExchangeKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The events that end a message's story (docs/messages.md, events); a dead letter ends it too.
pub const COMPLETION_EVENTS: [&str; 9] = [
    "wallet.saved",
    "wallet.save_failed",
    "wallet.attached",
    "wallet.attach_rejected",
    "wallet.removed",
    "wallet.remove_rejected",
    "wallet.default_set",
    "wallet.default_rejected",
    "wallet.dead_lettered",
];
/// Published but unconfirmed messages at most: bounds memory, keeps the pipe full.
const MAX_UNCONFIRMED: usize = 2048;

/// A confirm to await, with what the tracker needs to know about its message.
struct InFlight {
    id: String,
    routing_key: String,
    expects_event: bool,
    confirm: PublisherConfirm,
}

/// Publishes messages and collects their completions until [`Session::finish`].
pub struct Session {
    connection: Connection,
    channel: Channel,
    exchange: String,
    tracker: Arc<Tracker>,
    confirms: mpsc::Sender<InFlight>,
    confirm_task: JoinHandle<()>,
    events_task: JoinHandle<()>,
    /// The first publish the broker could not route: no worker queue is bound.
    unroutable: Arc<Mutex<Option<String>>>,
}

impl Session {
    /// Connects and starts collecting completion events; `run` prefixes this run's ids.
    pub async fn open(amqp_url: &str, exchange: &str, run: &str) -> anyhow::Result<Self> {
        let (connection, _node) = crate::broker::connect_any(amqp_url, "loadgen")
            .await
            .context("cannot reach the broker at AMQP_URL")?;
        let mut events = completion_events(&connection, exchange).await?;
        let tracker = Arc::new(Tracker::new(run));
        let events_task = tokio::spawn({
            let tracker = tracker.clone();
            async move {
                while let Some(Ok(delivery)) = events.next().await {
                    tracker.event(delivery.routing_key.as_str(), &delivery.data);
                }
            }
        });
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (confirms, pending) = mpsc::channel(MAX_UNCONFIRMED);
        let unroutable = Arc::new(Mutex::new(None));
        let confirm_task =
            tokio::spawn(await_confirms(pending, tracker.clone(), unroutable.clone()));
        Ok(Self {
            connection,
            channel,
            exchange: exchange.to_owned(),
            tracker,
            confirms,
            confirm_task,
            events_task,
            unroutable,
        })
    }

    /// Publishes `message` (mandatory, so an unbound routing key is reported rather
    /// than dropped); its confirm is awaited in the background.
    pub async fn publish(&self, message: &Message) -> anyhow::Result<()> {
        if let Some(key) = self.unroutable.lock().expect("unroutable flag").clone() {
            bail!(
                "no queue is bound to exchange {} for {key}: is a worker running with the same WALLET_EXCHANGE?",
                self.exchange
            );
        }
        self.tracker
            .publishing(&message.id, message.seq, message.expects_event);
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                options,
                &message.body,
                message.properties(),
            )
            .await
            .context("cannot publish to the broker")?;
        let in_flight = InFlight {
            id: message.id.clone(),
            routing_key: message.routing_key.clone(),
            expects_event: message.expects_event,
            confirm,
        };
        self.confirms
            .send(in_flight)
            .await
            .map_err(|_| anyhow::anyhow!("the confirm listener stopped"))
    }

    /// One of the sources the worker saved so far in this session.
    pub fn saved_source(&self, pick: u64) -> Option<SavedSource> {
        self.tracker.saved_source(pick)
    }

    /// The highest publish position ([`Message::seq`]) answered so far.
    pub fn answered_up_to(&self) -> u64 {
        self.tracker.answered_up_to()
    }

    /// Expected completions not received yet.
    pub fn pending(&self) -> usize {
        self.tracker.pending()
    }

    /// Waits until the next completion (or `at_most`).
    pub async fn next_answer(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.tracker.changed.notified()).await;
    }

    /// Messages whose story is over (for a progress bar).
    pub fn settled(&self) -> u64 {
        self.tracker.settled()
    }

    /// The tracker, for a progress bar that keeps ticking while [`Session::finish`] waits.
    pub(crate) fn progress_handle(&self) -> Arc<Tracker> {
        self.tracker.clone()
    }

    /// Waits for every confirm, then for every expected completion or `timeout`;
    /// closes the connection and reports.
    pub async fn finish(self, timeout: Duration, seed: u64) -> anyhow::Result<Report> {
        drop(self.confirms);
        let _ = self.confirm_task.await;
        let deadline = tokio::time::Instant::now() + timeout;
        while self.tracker.pending() > 0 && tokio::time::Instant::now() < deadline {
            let changed = self.tracker.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
        self.events_task.abort();
        let _ = self.channel.close(200, "done".into()).await;
        let _ = self.connection.close(200, "done".into()).await;
        if let Some(key) = self.unroutable.lock().expect("unroutable flag").clone() {
            bail!(
                "no queue is bound to exchange {} for {key}: is a worker running with the same WALLET_EXCHANGE?",
                self.exchange
            );
        }
        Ok(self.tracker.report(seed))
    }
}

/// A private queue (gone with the connection) bound to every completion event on
/// `exchange`, declared if need be, and a consumer of it.
async fn completion_events(connection: &Connection, exchange: &str) -> anyhow::Result<Consumer> {
    let events_channel = connection.create_channel().await?;
    events_channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot declare the topic exchange {exchange}"))?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = events_channel
        .queue_declare("".into(), private, FieldTable::default())
        .await?;
    for key in COMPLETION_EVENTS {
        let (name, options) = (queue.name().clone(), QueueBindOptions::default());
        events_channel
            .queue_bind(
                name,
                exchange.into(),
                key.into(),
                options,
                FieldTable::default(),
            )
            .await?;
    }
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let events = events_channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await?;
    // The consumer keeps its channel open, as it did when this was all `open`.
    Ok(events)
}

/// Awaits confirms in publish order (the broker confirms in order, so this is not a
/// bottleneck) and records each outcome.
async fn await_confirms(
    mut pending: mpsc::Receiver<InFlight>,
    tracker: Arc<Tracker>,
    unroutable: Arc<Mutex<Option<String>>>,
) {
    while let Some(in_flight) = pending.recv().await {
        let outcome = match in_flight.confirm.await {
            Ok(confirmation) => check(confirmation, &in_flight.routing_key),
            Err(err) => Err(PublishError::Broker(err)),
        };
        match outcome {
            Ok(()) => tracker.confirmed(&in_flight.routing_key, in_flight.expects_event),
            Err(err) => {
                tracker.failed(&in_flight.id);
                if let PublishError::Unroutable(key) = err {
                    unroutable
                        .lock()
                        .expect("unroutable flag")
                        .get_or_insert(key);
                } else {
                    tracing::warn!(message_id = %in_flight.id, error = %err, "publish failed");
                }
            }
        }
    }
}
