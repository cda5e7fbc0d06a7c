//! The state changes handlers decide, applied by the committer in one transaction.

use crate::domain::events::{self, OutboundEvent, WalletSaved};
use crate::domain::{Meta, Order, Secret};
use crate::store::{Effect, orders, wallet};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use sqlx::PgConnection;

/// One write.
pub enum Step {
    /// Record a placed order and its customer.
    RecordPlaced(Order),
    /// Store a source in the customer's wallet (or find it there) and emit `wallet.saved`.
    SaveSource(SaveSource),
    /// Record an order in checkout paying with a stored source.
    Attach {
        order_id: String,
        customer_id: String,
        status: String,
        customer_payment_source_id: String,
    },
    /// Emit an event decided up front.
    Event(OutboundEvent),
}

/// Everything `wallet.saved` needs besides the stored row.
pub struct SaveSource {
    pub cause: Meta,
    pub order_id: String,
    pub customer_id: String,
    pub gateway_id: String,
    pub name: String,
    pub metadata: Map<String, Value>,
    pub reference: String,
    pub customer_token: Secret,
    pub payment_source_token: Secret,
}

/// The changes of one message, labelled with its inbox outcome.
pub struct Changes {
    pub outcome: &'static str,
    pub steps: Vec<Step>,
}

impl Effect for Changes {
    fn outcome(&self) -> &'static str {
        self.outcome
    }

    fn lock_key(&self) -> &str {
        self.steps
            .iter()
            .find_map(|step| match step {
                Step::RecordPlaced(order) => order.customer.as_ref().map(|c| c.id.as_str()),
                Step::SaveSource(save) => Some(save.customer_id.as_str()),
                Step::Attach { customer_id, .. } => Some(customer_id.as_str()),
                Step::Event(_) => None,
            })
            .unwrap_or("")
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, sqlx::Result<Vec<OutboundEvent>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for step in &self.steps {
                match step {
                    Step::RecordPlaced(order) => orders::record_placed(conn, order).await?,
                    Step::SaveSource(save) => out.push(save_source(conn, save).await?),
                    Step::Attach {
                        order_id,
                        customer_id,
                        status,
                        customer_payment_source_id,
                    } => {
                        orders::record_attachment(
                            conn,
                            order_id,
                            customer_id,
                            status,
                            customer_payment_source_id,
                        )
                        .await?
                    }
                    Step::Event(event) => out.push(event.clone()),
                }
            }
            Ok(out)
        })
    }
}

async fn save_source(conn: &mut PgConnection, save: &SaveSource) -> sqlx::Result<OutboundEvent> {
    let (summary, created) = wallet::save(
        conn,
        &wallet::NewSource {
            customer_id: &save.customer_id,
            gateway_id: &save.gateway_id,
            name: &save.name,
            metadata: &save.metadata,
            reference: &save.reference,
            customer_token: &save.customer_token,
            payment_source_token: &save.payment_source_token,
        },
    )
    .await?;
    Ok(events::outbound(
        &save.cause,
        "wallet.saved",
        WalletSaved {
            order_id: save.order_id.clone(),
            customer_id: save.customer_id.clone(),
            customer_payment_source: summary,
            created,
        },
    ))
}
