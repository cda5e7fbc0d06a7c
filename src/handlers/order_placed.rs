//! `order.placed`: record the order; save its payment source when it asks to.

use super::saving::{self, Decision};
use super::{Context, HandlerError, Outcome};
use crate::domain::{Change, Effect, Meta, OrderPlaced};

pub async fn handle(
    ctx: &Context,
    meta: &Meta,
    cmd: &OrderPlaced,
) -> Result<Outcome, HandlerError> {
    let mut effects = vec![Effect::RecordPlaced(cmd.order.clone())];
    if !cmd.order.save_to_wallet {
        return Ok(Outcome::Commit(Change::new(meta, effects)));
    }
    // The order is recorded with the save's result, in one transaction: a save that
    // must wait retries the whole message, and the inbox still sees it unprocessed.
    Ok(match saving::save(ctx, meta, &cmd.order).await? {
        Decision::Commit(effect) => {
            effects.push(effect);
            Outcome::Commit(Change::new(meta, effects))
        }
        Decision::Duplicate => Outcome::Duplicate,
        Decision::Retry(retry) => Outcome::RetryLater(retry),
    })
}
