//! `wallet.remove` and `wallet.set_default`: changes to a customer's wallet, decided
//! entirely in the commit, under the customer's lock.

use super::Outcome;
use crate::domain::{Change, Effect, Meta, SourceRef};

pub fn remove(meta: &Meta, cmd: &SourceRef) -> Outcome {
    Outcome::Commit(Change::new(meta, vec![Effect::Remove(cmd.clone())]))
}

pub fn set_default(meta: &Meta, cmd: &SourceRef) -> Outcome {
    Outcome::Commit(Change::new(meta, vec![Effect::SetDefault(cmd.clone())]))
}
