//! Business rules: one module per inbound message. A handler reads what it needs, calls
//! the gateway if it must, and returns an [`Outcome`]; it knows nothing of AMQP. What
//! depends on stored state is decided again at commit (see [`crate::store::effects`]).

mod directory;
mod order_placed;
mod saving;
mod wallet_attach;
mod wallet_change;
mod wallet_save;

pub use directory::GatewayDirectory;

use crate::crypto::Keyring;
use crate::domain::{Command, Inbound};
use crate::gateway::GatewayClient;
use crate::store::Change;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// What handlers need from the outside world.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// Opens the stored order tokens `wallet.save` sends to the gateway.
    pub keys: Keyring,
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

/// A handler's decision, mapped to ack / retry later / dead-letter in `broker::delivery`.
#[derive(Debug)]
pub enum Outcome {
    /// Commit this change (with the inbox claim and outbox events), then ack.
    Commit(Change),
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
    let meta = &inbound.meta;
    match &inbound.command {
        Command::OrderPlaced(cmd) => order_placed::handle(ctx, meta, cmd).await,
        Command::WalletSave(cmd) => wallet_save::handle(ctx, meta, cmd).await,
        Command::WalletAttach(cmd) => Ok(wallet_attach::handle(meta, cmd)),
        Command::WalletRemove(cmd) => Ok(wallet_change::remove(meta, cmd)),
        Command::WalletSetDefault(cmd) => Ok(wallet_change::set_default(meta, cmd)),
    }
}
