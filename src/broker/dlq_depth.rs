//! The dead-letter queue's depth as the gauge `wallet_dlq_depth{queue}`, sampled every few
//! seconds with a passive declare on a channel of its own, for as long as the broker
//! session lasts. It counts ready messages: while a `dlq` command holds some of them
//! (see [`super::dlq`]), the gauge shows fewer.

use crate::error_chain::ErrorChain;
use crate::metrics as m;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Between two samples.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Samples `queue`'s depth every `interval` until the task is aborted or the channel
/// fails (the session is then ending anyway).
pub async fn spawn(
    connection: &Connection,
    queue: String,
    interval: Duration,
) -> lapin::Result<JoinHandle<()>> {
    let channel = connection.create_channel().await?;
    Ok(tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match depth(&channel, &queue).await {
                Ok(depth) => {
                    let gauge = metrics::gauge!(m::DLQ_DEPTH, "queue" => queue.clone());
                    gauge.set(f64::from(depth));
                }
                Err(err) => {
                    tracing::warn!(queue, error = %ErrorChain(&err), "cannot read the dead-letter queue's depth");
                    return;
                }
            }
        }
    }))
}

async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.message_count())
}
