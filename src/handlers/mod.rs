//! Business rules: one module per inbound message. A handler reads what it needs, calls
//! the gateway if it must, and returns an [`Outcome`], or a [`HandlerError`] when it
//! cannot decide; it knows nothing of AMQP. What depends on stored state is decided
//! again at commit (see [`crate::domain::commit_rules`]).

mod directory;
mod order_placed;
mod saving;
mod wallet_attach;
mod wallet_change;
mod wallet_save;

pub use directory::GatewayDirectory;

use crate::crypto::Keyring;
use crate::domain::{Change, Command, ErrorKind, Inbound};
use crate::gateway::GatewayClient;
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

/// A failure of this attempt. Whether the message is tried again is decided from its
/// kind ([`ErrorKind::is_transient`]) and the attempts left, in `broker::verdict` alone.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryLater {
    /// `x-wallet-error` if the message is dead-lettered (`order_not_found`, ...).
    pub kind: ErrorKind,
    /// One line for people; never a secret.
    pub detail: String,
    /// False when waiting is not the message's fault (an open circuit): the attempt
    /// count is kept, so a long outage parks messages instead of dead-lettering them.
    pub counts_as_attempt: bool,
    /// The earliest useful next attempt (`Retry-After`, circuit cool-down).
    pub not_before: Option<Duration>,
}

/// Why a handler could not decide. A gateway's failures are not errors here: they are
/// decisions ([`Outcome::RetryLater`], or a refusal to commit).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A read or write of the handler's own state failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl HandlerError {
    /// Whether the failure is the database being unavailable for now (see
    /// [`crate::store::is_outage`]): the caller waits for it, holding the message,
    /// instead of spending one of its attempts. Otherwise the attempt has failed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(err) => crate::store::is_outage(err),
        }
    }
}

/// Decides what `inbound` does. Errors are returned as they are: the caller waits for
/// the database when [`HandlerError::is_transient`] says so, instead of spending the
/// message's attempts.
pub async fn handle(ctx: &Context, inbound: &Inbound) -> Result<Outcome, HandlerError> {
    let meta = &inbound.meta;
    match &inbound.command {
        Command::OrderPlaced(cmd) => order_placed::handle(ctx, meta, cmd).await,
        Command::WalletSave(cmd) => wallet_save::handle(ctx, meta, cmd).await,
        Command::WalletAttach(cmd) => Ok(wallet_attach::handle(meta, cmd)),
        Command::WalletRemove(cmd) => Ok(wallet_change::remove(meta, cmd)),
        Command::WalletSetDefault(cmd) => Ok(wallet_change::set_default(meta, cmd)),
    }
}

#[cfg(test)]
mod tests {
    use super::HandlerError;

    #[test]
    fn only_an_unavailable_database_is_waited_for() {
        assert!(HandlerError::from(sqlx::Error::PoolTimedOut).is_transient());
        let refused = HandlerError::from(sqlx::Error::RowNotFound);
        assert!(!refused.is_transient());
        assert!(refused.to_string().starts_with("database: "));
    }
}
