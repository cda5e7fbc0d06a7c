//! Publishing with publisher confirms: a publish counts only once the broker took it.

use lapin::Confirmation;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};

/// Why a publish did not land.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection failed: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0}")]
    Unroutable(String),
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
    check(confirm.await?, routing_key)
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
