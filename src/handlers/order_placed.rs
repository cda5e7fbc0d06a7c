//! `order.placed`: record the order; save its payment source when it asks to.

use super::effects::{Changes, Step};
use super::saving::{self, Decision};
use super::{Context, Outcome};
use crate::domain::{Meta, OrderPlaced};

pub async fn handle(ctx: &Context, meta: &Meta, cmd: &OrderPlaced) -> sqlx::Result<Outcome> {
    let mut steps = vec![Step::RecordPlaced(cmd.order.clone())];
    if !cmd.order.save_to_wallet {
        return Ok(Outcome::Commit(std::sync::Arc::new(Changes {
            outcome: "recorded",
            steps,
        })));
    }
    // The order is recorded with the save's result, in one transaction: a save that
    // must wait retries the whole message, and the inbox still sees it unprocessed.
    Ok(match saving::save(ctx, meta, &cmd.order).await? {
        Decision::Commit(outcome, more) => {
            steps.extend(more);
            Outcome::Commit(std::sync::Arc::new(Changes { outcome, steps }))
        }
        Decision::Duplicate => Outcome::Duplicate,
        Decision::Retry(retry) => Outcome::RetryLater(retry),
    })
}
