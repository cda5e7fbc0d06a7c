//! Orders the worker has seen, and the customers they belong to.

use super::keys::ORDERS;
use crate::crypto::Keyring;
use crate::domain::commands::{Customer, ExternalPayment};
use crate::domain::ids::{CustomerId, GatewayId};
use crate::domain::{Order, OrderStatus, PaymentSource};
use serde_json::{Map, Value};
use sqlx::{PgPool, Row};

/// Placed orders as columns, for `UNNEST` ([`super::batch::open`]).
#[derive(Default)]
pub(super) struct OrderRows<'a> {
    pub(super) id: Vec<&'a str>,
    pub(super) customer_id: Vec<Option<&'a str>>,
    pub(super) number: Vec<Option<&'a str>>,
    pub(super) status: Vec<&'a str>,
    pub(super) guest: Vec<bool>,
    pub(super) currency_code: Vec<Option<&'a str>>,
    pub(super) total_amount_cents: Vec<Option<i64>>,
    pub(super) payment_source_type: Vec<Option<&'a str>>,
    pub(super) payment_source_id: Vec<Option<&'a str>>,
    pub(super) gateway_id: Vec<Option<&'a str>>,
    /// The payment source token, sealed for the order's row, and its key id.
    pub(super) payment_source_token: Vec<Option<Vec<u8>>>,
    pub(super) token_key_id: Vec<Option<String>>,
    pub(super) metadata: Vec<String>,
}

impl<'a> OrderRows<'a> {
    pub(super) fn push(&mut self, keys: &Keyring, order: &'a Order) {
        let (kind, external) = match &order.payment_source {
            Some(PaymentSource::External(p)) => (Some("external_payments"), Some(p)),
            Some(PaymentSource::Unsupported { kind }) => (Some(kind.as_str()), None),
            None => (None, None),
        };
        let customer = order.customer.as_ref();
        self.id.push(&order.id);
        self.customer_id.push(customer.map(|c| c.id.as_str()));
        self.number.push(order.number.as_deref());
        self.status.push(order.status.as_str());
        self.guest.push(customer.is_none());
        self.currency_code.push(order.currency_code.as_deref());
        self.total_amount_cents.push(order.total_amount_cents);
        self.payment_source_type.push(kind);
        self.payment_source_id.push(external.map(|p| p.id.as_str()));
        self.gateway_id
            .push(external.map(|p| p.gateway_id.as_str()));
        let sealed = external
            .map(|p| keys.seal_secret(&p.token, ORDERS.row("payment_source_token", &order.id)));
        self.token_key_id
            .push(sealed.as_ref().map(|s| s.key_id.to_string()));
        self.payment_source_token.push(sealed.map(|s| s.bytes));
        let metadata = external.map_or_else(Map::new, |p| p.metadata.clone());
        self.metadata.push(Value::Object(metadata).to_string());
    }
}

/// The order as `order.placed` described it, for `wallet.save`; its token opened.
pub async fn find(pool: &PgPool, keys: &Keyring, order_id: &str) -> sqlx::Result<Option<Order>> {
    let row = sqlx::query(
        "SELECT o.id, o.number, o.status, o.guest, o.currency_code, o.total_amount_cents,
                o.payment_source_type, o.payment_source_id, o.gateway_id,
                o.token_key_id, o.payment_source_token_sealed, o.payment_source_metadata,
                o.customer_id, c.email
         FROM orders o LEFT JOIN customers c ON c.id = o.customer_id
         WHERE o.id = $1 AND o.placed_at IS NOT NULL",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let customer_id: Option<CustomerId> = row.try_get("customer_id")?;
    let guest: bool = row.try_get("guest")?;
    let customer = match (guest, customer_id) {
        (false, Some(id)) => Some(Customer {
            id,
            email: row.try_get("email")?,
        }),
        _ => None,
    };
    let kind: Option<String> = row.try_get("payment_source_type")?;
    let payment_source = match kind.as_deref() {
        None => None,
        Some("external_payments") => {
            let metadata: sqlx::types::Json<Map<String, Value>> =
                row.try_get("payment_source_metadata")?;
            Some(PaymentSource::External(ExternalPayment {
                id: row
                    .try_get::<Option<String>, _>("payment_source_id")?
                    .unwrap_or_default(),
                gateway_id: GatewayId::stored(
                    row.try_get::<Option<String>, _>("gateway_id")?
                        .unwrap_or_default(),
                ),
                token: open_token(keys, &row)?,
                metadata: metadata.0,
            }))
        }
        Some(other) => Some(PaymentSource::Unsupported {
            kind: other.to_owned(),
        }),
    };
    Ok(Some(Order {
        id: row.try_get("id")?,
        number: row.try_get("number")?,
        status: OrderStatus::stored(row.try_get("status")?),
        customer,
        currency_code: row.try_get("currency_code")?,
        total_amount_cents: row.try_get("total_amount_cents")?,
        payment_source,
        save_to_wallet: true,
    }))
}

/// The order's payment source token, opened; a token that does not open is a decode
/// error naming the order and the key.
fn open_token(keys: &Keyring, row: &sqlx::postgres::PgRow) -> sqlx::Result<crate::domain::Secret> {
    let id: String = row.try_get("id")?;
    let key_id: Option<String> = row.try_get("token_key_id")?;
    let sealed: Option<Vec<u8>> = row.try_get("payment_source_token_sealed")?;
    match (key_id, sealed) {
        (Some(key_id), Some(sealed)) => keys
            .open_secret(&key_id, &sealed, ORDERS.row("payment_source_token", &id))
            .map_err(|err| sqlx::Error::Decode(err.into())),
        // An external payment without a token is refused at parse: none was stored.
        _ => Ok(crate::domain::Secret::new("")),
    }
}
