//! `wallet.save`: save the payment source of an order already placed.

use super::saving::{self, Decision};
use super::{Context, HandlerError, Outcome, RetryLater};
use crate::domain::{Change, ErrorKind, Meta, WalletSave};
use crate::store::orders;

pub async fn handle(ctx: &Context, meta: &Meta, cmd: &WalletSave) -> Result<Outcome, HandlerError> {
    let Some(order) = orders::find(&ctx.pool, &ctx.keys, &cmd.order_id).await? else {
        // Its order.placed may still be on the way.
        return Ok(Outcome::RetryLater(RetryLater {
            kind: ErrorKind::OrderNotFound,
            detail: format!("order {} has not been placed yet", cmd.order_id),
            counts_as_attempt: true,
            not_before: None,
        }));
    };
    Ok(match saving::save(ctx, meta, &order).await? {
        Decision::Commit(effect) => Outcome::Commit(Change::new(meta, vec![effect])),
        Decision::Duplicate => Outcome::Duplicate,
        Decision::Retry(retry) => Outcome::RetryLater(retry),
    })
}
