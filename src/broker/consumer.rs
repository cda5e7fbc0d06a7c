//! The consumer: one session per broker connection, each delivery handled concurrently
//! up to the prefetch (see [`super::delivery`]). Deliveries never outlive their channel:
//! when it dies they are dropped and the broker hands them out again. A delivery let go
//! because the publishing channel died ends the session, so the broker gets every
//! delivery of it back at once rather than holding them unacked.

use super::acker::{self, Settle};
use super::delivery;
use super::shared::Shared;
use crate::metrics as m;
use futures::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
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
    let consume_channel = connection.create_channel().await?;
    consume_channel
        .basic_qos(shared.settings.prefetch, BasicQosOptions::default())
        .await?;
    let publish_channel = connection.create_channel().await?;
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut consumer = consume_channel
        .basic_consume(
            shared.topology.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer_tag = consumer.tag();
    let (ack, acker_task) = acker::spawn(consume_channel.clone(), &shared.supervisor);
    let tracker = TaskTracker::new();
    let hand_back = CancellationToken::new();
    let broken = CancellationToken::new();
    let mut stopping = false;
    let result = loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            () = broken.cancelled() => break Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Closed, "the publishing channel is gone"))),
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                let _ = consume_channel
                    .basic_cancel(consumer_tag.clone(), BasicCancelOptions::default())
                    .await;
                continue;
            }
        };
        match next {
            Some(Ok(delivery)) if stopping => ack.settle(delivery.delivery_tag, Settle::Requeue),
            Some(Ok(delivery)) => {
                let shared = shared.clone();
                let (ack, publish, hand_back, broken) = (
                    ack.clone(),
                    publish_channel.clone(),
                    hand_back.clone(),
                    broken.clone(),
                );
                tracker.spawn(async move {
                    let tag = delivery.delivery_tag;
                    metrics::gauge!(m::IN_FLIGHT).increment(1.0);
                    // `process` contains the handler's panics; this catches any other, so
                    // a delivery always ends settled and its prefetch slot comes back.
                    let processed =
                        AssertUnwindSafe(delivery::process(&shared, &publish, &delivery))
                            .catch_unwind();
                    let settle = tokio::select! {
                        settle = processed => settle.unwrap_or_else(|panic| {
                            let why = crate::supervisor::panic_message(panic.as_ref());
                            metrics::counter!(m::PANICS, "task" => "delivery").increment(1);
                            tracing::error!(panic = %why, "delivery panicked; handing the message back");
                            Settle::Requeue
                        }),
                        _ = hand_back.cancelled() => Settle::Requeue,
                    };
                    if settle == Settle::Abandon {
                        broken.cancel();
                    }
                    metrics::gauge!(m::IN_FLIGHT).decrement(1.0);
                    ack.settle(tag, settle);
                });
            }
            Some(Err(err)) => break Err(err),
            None => break Ok(()),
        }
    };
    tracker.close();
    if tokio::time::timeout(shared.settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; handing back deliveries still in flight");
        hand_back.cancel();
        tracker.wait().await;
    }
    drop(ack);
    let _ = acker_task.await;
    let _ = publish_channel.close(200, "bye".into()).await;
    let _ = consume_channel.close(200, "bye".into()).await;
    result
}
