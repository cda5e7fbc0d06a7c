//! Holding the dead letters: taken with `basic.get`, settled one by one, and the rest
//! handed back in place when the channel closes.

use super::{DeadLetterEntry, DlqError};
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind};

/// A channel on which the dead-letter queue is known to exist.
pub(super) async fn open(connection: &Connection, queue: &str) -> Result<Channel, DlqError> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => Ok(channel),
        Err(err) if matches!(err.kind(), ErrorKind::ProtocolError(e) if e.get_id() == 404) => {
            Err(DlqError::Missing(queue.to_owned()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Dead letters taken off the queue and not yet settled; releasing them requeues
/// every one not acked, in place.
pub(super) struct Held {
    pub channel: Channel,
    /// In queue order.
    pub deliveries: Vec<Delivery>,
}

impl Held {
    pub async fn take(connection: &Connection, queue: &str) -> Result<Self, DlqError> {
        let channel = open(connection, queue).await?;
        let mut deliveries = Vec::new();
        let mut expected = None;
        while expected.is_none_or(|n| deliveries.len() < n) {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(got)) => {
                    expected.get_or_insert(
                        usize::try_from(got.message_count)
                            .unwrap_or(usize::MAX)
                            .saturating_add(1),
                    );
                    deliveries.push(got.delivery);
                }
                Ok(None) => break,
                Err(err) => {
                    let _ = channel.close(200, "dead letters handed back".into()).await;
                    return Err(err.into());
                }
            }
        }
        Ok(Self {
            channel,
            deliveries,
        })
    }

    pub fn entries(&self) -> Vec<DeadLetterEntry> {
        self.deliveries
            .iter()
            .enumerate()
            .map(|(i, delivery)| DeadLetterEntry::from_delivery(i + 1, delivery))
            .collect()
    }

    pub async fn release(self) {
        let _ = self
            .channel
            .close(200, "dead letters handed back".into())
            .await;
    }
}
