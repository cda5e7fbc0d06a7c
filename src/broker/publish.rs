//! Publishing with publisher confirms: a publish counts only once the broker took it,
//! and a confirm that does not come within [`CONFIRM_TIMEOUT`] counts as a failure (a
//! queue without a leader, a broker that stopped answering) instead of a wait forever.

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use std::time::Duration;

/// How long the broker may take to confirm a publish.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a publish did not land.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
}

/// Publishes and waits for the broker's confirm. `mandatory` turns "no queue bound"
/// into an error instead of a silent drop (used for retries and dead letters).
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
) -> Result<(), PublishError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?;
    check(confirmed(confirm).await?, routing_key)
}

/// Waits for `confirm`, at most [`CONFIRM_TIMEOUT`].
pub async fn confirmed(confirm: PublisherConfirm) -> Result<Confirmation, PublishError> {
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
        Ok(confirmation) => Ok(confirmation?),
        Err(_) => Err(PublishError::Timeout(CONFIRM_TIMEOUT)),
    }
}

/// Maps a confirmation to success or the reason it failed.
pub fn check(confirmation: Confirmation, routing_key: &str) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(routing_key.to_owned())),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
    }
}

/// Properties of a JSON message the worker publishes itself.
pub fn json_properties(message_id: &str, kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_type(kind.into())
        .with_app_id("wallet-worker".into())
        .with_timestamp(
            chrono::Utc::now()
                .timestamp()
                .try_into()
                .unwrap_or_default(),
        )
}
