//! One `dlq` operation at a time per dead-letter queue, across processes: while a pass
//! holds part of the queue, another would see only the rest (a wrong count, a missed
//! dead letter). The lock is an exclusive, auto-deleted queue `<dlq>.lock`: the broker
//! frees it when its connection closes, so a killed command never leaves it behind.

use super::DlqError;
use super::scan::is_not_found;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ErrorKind};

/// Held while a `dlq` operation runs; [`Lock::release`] frees it at once.
pub(super) struct Lock {
    channel: lapin::Channel,
    name: String,
}

impl Lock {
    pub async fn acquire(
        connection: &Connection,
        dead_letter_queue: &str,
    ) -> Result<Self, DlqError> {
        let name = format!("{dead_letter_queue}.lock");
        let channel = connection.create_channel().await?;
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        match channel
            .queue_declare(name.as_str().into(), exclusive, FieldTable::default())
            .await
        {
            Ok(_) => Ok(Self { channel, name }),
            // RESOURCE_LOCKED: another connection declared it.
            Err(err) if matches!(err.kind(), ErrorKind::ProtocolError(e) if e.get_id() == 405) => {
                Err(DlqError::Busy(dead_letter_queue.to_owned()))
            }
            Err(err) if is_not_found(&err) => Err(DlqError::Missing(dead_letter_queue.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    pub async fn release(self) {
        let _ = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.channel.close(200, "dlq lock released".into()).await;
    }
}
