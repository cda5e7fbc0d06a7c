//! Business rules: one module per inbound message. A handler reads what it needs, calls
//! the gateway if it must, and returns an [`Outcome`]; it knows nothing of AMQP.

mod directory;
mod effects;
mod order_placed;
mod saving;
mod wallet_attach;
mod wallet_save;

pub use directory::GatewayDirectory;
pub use effects::{Changes, Step};

use crate::domain::{Command, Inbound};
use crate::gateway::GatewayClient;
use crate::store::Effect;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// What handlers need from the outside world.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// Gateways, cached briefly.
    pub gateways: Arc<GatewayDirectory>,
    pub gateway: GatewayClient,
    pub circuit: CircuitSettings,
}

/// When a gateway's circuit opens, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct CircuitSettings {
    /// Consecutive transient failures that open the circuit.
    pub threshold: i32,
    /// How long an open circuit keeps calls away from the gateway.
    pub cool_down: Duration,
}

/// A handler's decision, mapped to ack / retry later / dead-letter in `broker::consumer`.
pub enum Outcome {
    /// Commit these changes (with the inbox claim and outbox events), then ack.
    Commit(Arc<dyn Effect>),
    /// Already processed: ack without effect.
    Duplicate,
    /// Cannot be done now; try again later.
    RetryLater(RetryLater),
}

/// A transient failure and how to wait for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryLater {
    /// `x-wallet-error` if attempts run out (`order_not_found`, `gateway_unavailable`).
    pub kind: &'static str,
    /// One line for people; never a secret.
    pub detail: String,
    /// False when waiting is not the message's fault (an open circuit): the attempt
    /// count is kept, so a long outage parks messages instead of dead-lettering them.
    pub counts_as_attempt: bool,
    /// The earliest useful next attempt (`Retry-After`, circuit cool-down).
    pub not_before: Option<Duration>,
}

/// Decides what `inbound` does. Database errors are returned as-is: the caller waits
/// for the database instead of spending the message's attempts.
pub async fn handle(ctx: &Context, inbound: &Inbound) -> sqlx::Result<Outcome> {
    match &inbound.command {
        Command::OrderPlaced(cmd) => order_placed::handle(ctx, &inbound.meta, cmd).await,
        Command::WalletSave(cmd) => wallet_save::handle(ctx, &inbound.meta, cmd).await,
        Command::WalletAttach(cmd) => wallet_attach::handle(ctx, &inbound.meta, cmd).await,
    }
}
