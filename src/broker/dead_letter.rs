//! Dead letters: the message, body byte for byte and properties kept, goes to the
//! dead-letter queue with the `x-wallet-*` headers (docs/operations.md, failure handling); once the broker
//! confirmed it, `wallet.dead_lettered` tells the pipeline (docs/messages.md, events), so nobody
//! waits for an outcome that will not come.

use super::headers::{self, ATTEMPTS, DEAD_LETTERED_AT, ERROR, ERROR_DETAIL, ORIGINAL_ROUTING_KEY};
use super::publish::{PublishError, json_properties, publish_confirmed};
use super::topology::Topology;
use crate::domain::ErrorKind;
use crate::domain::events::{self, Cause, DeadLettered};
use crate::telemetry::propagation;
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

/// Publishes the dead letter to the dead-letter queue, confirmed. The caller then
/// publishes its event with [`announce`]; each step is retried on its own, so a failed
/// announcement never doubles the dead letter.
pub async fn park(
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

/// Publishes `wallet.dead_lettered` for `why`, confirmed.
pub async fn announce(
    channel: &Channel,
    topology: &Topology,
    why: &DeadLetter<'_>,
) -> Result<(), PublishError> {
    let cause = Cause {
        id: why.message_id,
        correlation_id: why.correlation_id,
    };
    let event = events::outbound(
        cause,
        "wallet.dead_lettered",
        DeadLettered {
            message_id: why.message_id.map(str::to_owned),
            message_type: why.routing_key.to_owned(),
            error: why.kind.as_str().to_owned(),
            detail: why.detail.to_owned(),
            attempts: why.attempts,
            order_id: why.order_id.map(str::to_owned),
        },
    );
    let mut properties = json_properties(&event.id, event.routing_key);
    if let Some(correlation_id) = why.correlation_id {
        properties = properties.with_correlation_id(correlation_id.into());
    }
    // Published here, in the delivery's span: its trace goes on like the outbox's.
    properties = headers::with_trace(properties, propagation::current().as_ref());
    publish_confirmed(
        channel,
        &topology.exchange,
        event.routing_key,
        &event.body,
        properties,
        false,
    )
    .await
}
