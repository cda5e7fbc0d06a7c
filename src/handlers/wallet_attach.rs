//! `wallet.attach`: attach a stored customer payment source to an order in checkout,
//! only for the customer who owns it.

use super::effects::{Changes, Step};
use super::{Context, Outcome};
use crate::domain::commands::status_is_editable;
use crate::domain::events::{
    self, AttachRejection, AttachedPaymentSource, WalletAttachRejected, WalletAttached,
};
use crate::domain::{Meta, WalletAttach};
use crate::store::{orders, wallet};

pub async fn handle(ctx: &Context, meta: &Meta, cmd: &WalletAttach) -> sqlx::Result<Outcome> {
    let reject = |reason| {
        let event = events::outbound(
            meta,
            "wallet.attach_rejected",
            WalletAttachRejected {
                order_id: cmd.order_id.clone(),
                customer_payment_source_id: cmd.customer_payment_source_id.clone(),
                reason,
            },
        );
        Ok(Outcome::Commit(std::sync::Arc::new(Changes {
            outcome: "attach_rejected",
            steps: vec![Step::Event(event)],
        })))
    };
    let seen_status = orders::status(&ctx.pool, &cmd.order_id).await?;
    let editable = status_is_editable(&cmd.order_status)
        && seen_status.as_deref().is_none_or(status_is_editable);
    if !editable {
        return reject(AttachRejection::OrderNotEditable);
    }
    // Unknown and foreign sources look the same: existence is not revealed.
    let Some(source) =
        wallet::find_owned(&ctx.pool, &cmd.customer_payment_source_id, &cmd.customer_id).await?
    else {
        return reject(AttachRejection::NotFound);
    };
    let gateway = ctx.gateways.find(&source.gateway_id).await?;
    if !gateway.is_some_and(|g| g.enabled) {
        return reject(AttachRejection::GatewayDisabled);
    }
    let attached = events::outbound(
        meta,
        "wallet.attached",
        WalletAttached {
            order_id: cmd.order_id.clone(),
            customer_id: cmd.customer_id.clone(),
            customer_payment_source_id: source.id.clone(),
            payment_source: AttachedPaymentSource {
                kind: "external_payments",
                gateway_id: source.gateway_id.clone(),
                customer_token: source.customer_token.clone(),
                payment_source_token: source.payment_source_token.clone(),
                metadata: source.metadata.clone(),
            },
        },
    );
    Ok(Outcome::Commit(std::sync::Arc::new(Changes {
        outcome: "attached",
        steps: vec![
            Step::Attach {
                order_id: cmd.order_id.clone(),
                customer_id: source.customer_id,
                status: cmd.order_status.clone(),
                customer_payment_source_id: source.id,
            },
            Step::Event(attached),
        ],
    })))
}
