//! The consumer: one session per broker connection, each delivery handled concurrently
//! up to the prefetch (see [`super::delivery`]). Deliveries never outlive their channel:
//! when it dies they are dropped and the broker hands them out again. A delivery let go
//! because the publishing channel died ends the session, so the broker gets every
//! delivery of it back at once rather than holding them unacked.

use super::acker::{self, AckHandle, Settle};
use super::delivery;
use super::shared::Shared;
use crate::metrics as m;
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Consumes until the connection fails or `stop` is cancelled; then finishes the
/// deliveries in flight (or hands them back after the grace period).
pub async fn run_session(
    connection: &Connection,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> lapin::Result<()> {
    let Channels {
        consume,
        publish,
        mut consumer,
    } = Channels::open(connection, &shared).await?;
    let consumer_tag = consumer.tag();
    let (ack, acker_task) = acker::spawn(consume.clone(), &shared.supervisor);
    let tracker = TaskTracker::new();
    let session = Session {
        shared,
        ack,
        publish: publish.clone(),
        hand_back: CancellationToken::new(),
        broken: CancellationToken::new(),
    };
    let mut stopping = false;
    let result = loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = session.broken.cancelled() => break Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Closed, "the publishing channel is gone"))),
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                let _ = consume
                    .basic_cancel(consumer_tag.clone(), BasicCancelOptions::default())
                    .await;
                continue;
            }
        };
        match next {
            Some(Ok(delivery)) if stopping => {
                session.ack.settle(delivery.delivery_tag, Settle::Requeue);
            }
            Some(Ok(delivery)) => {
                tracker.spawn(session.clone().handle(delivery));
            }
            Some(Err(err)) => break Err(err),
            None => break Ok(()),
        }
    };
    session.drain(&tracker).await;
    drop(session);
    let _ = acker_task.await;
    let _ = publish.close(200, "bye".into()).await;
    let _ = consume.close(200, "bye".into()).await;
    result
}

/// A session's channels: one consumes the queue within the prefetch, one publishes
/// with confirms.
struct Channels {
    consume: Channel,
    publish: Channel,
    consumer: Consumer,
}

impl Channels {
    async fn open(connection: &Connection, shared: &Shared) -> lapin::Result<Self> {
        let consume = connection.create_channel().await?;
        consume
            .basic_qos(shared.settings.prefetch, BasicQosOptions::default())
            .await?;
        let publish = connection.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let consumer = consume
            .basic_consume(
                shared.topology.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            consume,
            publish,
            consumer,
        })
    }
}

/// What every delivery task of a session shares.
#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
    ack: AckHandle,
    publish: Channel,
    /// Cancelled when the grace period is over: deliveries still in flight go back.
    hand_back: CancellationToken,
    /// Cancelled when a delivery was let go because the publishing channel died.
    broken: CancellationToken,
}

impl Session {
    /// Processes one delivery and settles it, whatever happens.
    async fn handle(self, delivery: Delivery) {
        let tag = delivery.delivery_tag;
        metrics::gauge!(m::IN_FLIGHT).increment(1.0);
        // `process` contains the handler's panics; this catches any other, so a
        // delivery always ends settled and its prefetch slot comes back.
        let processed = AssertUnwindSafe(delivery::process(&self.shared, &self.publish, &delivery))
            .catch_unwind();
        let settle = tokio::select! {
            settle = processed => settle.unwrap_or_else(|panic| {
                let why = crate::supervisor::panic_message(panic.as_ref());
                metrics::counter!(m::PANICS, "task" => "delivery").increment(1);
                tracing::error!(panic = %why, "delivery panicked; handing the message back");
                Settle::Requeue
            }),
            _ = self.hand_back.cancelled() => Settle::Requeue,
        };
        if settle == Settle::Abandon {
            self.broken.cancel();
        }
        metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
        self.ack.settle(tag, settle);
    }

    /// Waits for the deliveries in flight, handing them back after the grace period.
    async fn drain(&self, tracker: &TaskTracker) {
        tracker.close();
        if tokio::time::timeout(self.shared.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; handing back deliveries still in flight");
            self.hand_back.cancel();
            tracker.wait().await;
        }
    }
}
