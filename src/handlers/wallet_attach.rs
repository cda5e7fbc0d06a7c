//! `wallet.attach`: attach a stored customer payment source to an order in checkout,
//! only for the customer who owns it. Every check (order editable, source owned and
//! available, gateway enabled) needs stored state, so all of them run in the commit.

use super::Outcome;
use crate::domain::{Change, Effect, Meta, WalletAttach};

pub fn handle(meta: &Meta, cmd: &WalletAttach) -> Outcome {
    Outcome::Commit(Change::new(meta, vec![Effect::Attach(cmd.clone())]))
}
