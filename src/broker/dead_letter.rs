//! Dead letters: the message, body byte for byte and properties kept, goes to the
//! dead-letter queue with the `x-wallet-*` headers (docs/operations.md, failure handling).
//! The intake ([`super::intake`]) stores it and announces it with `wallet.dead_lettered`
//! (docs/messages.md, events) in one transaction, so the event exists exactly when the
//! stored dead letter does.

use super::headers::{self, ATTEMPTS, DEAD_LETTERED_AT, ERROR, ERROR_DETAIL, ORIGINAL_ROUTING_KEY};
use super::publish::{PublishError, publish_confirmed};
use super::topology::Topology;
use crate::domain::ErrorKind;
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};

/// Why a message is dead-lettered, and what is known of it.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// `x-wallet-error`: `malformed`, `order_not_found`, `poison_message`, ...
    pub kind: ErrorKind,
    pub detail: &'a str,
    pub attempts: u32,
    pub routing_key: &'a str,
    /// The message's id, when it has one that could be read.
    pub message_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub order_id: Option<&'a str>,
}

/// Publishes the dead letter to the dead-letter queue, confirmed. On an error the
/// caller hands the delivery back, so it is dead-lettered again (at least once; the
/// intake stores it once).
pub async fn publish(
    channel: &Channel,
    topology: &Topology,
    body: &[u8],
    properties: &BasicProperties,
    why: &DeadLetter<'_>,
) -> Result<(), PublishError> {
    let headers = headers::with_headers(
        properties,
        &[
            (ERROR, Some(headers::long_string(why.kind.as_str()))),
            (ERROR_DETAIL, Some(headers::long_string(why.detail))),
            (ATTEMPTS, Some(AMQPValue::LongLongInt(why.attempts.into()))),
            (
                ORIGINAL_ROUTING_KEY,
                Some(headers::long_string(why.routing_key)),
            ),
            (
                DEAD_LETTERED_AT,
                Some(headers::long_string(
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                )),
            ),
        ],
    );
    let props = headers::rebuild(properties, headers, None);
    let queue = topology.dead_letter_queue();
    publish_confirmed(channel, "", &queue, body, props, true).await
}
