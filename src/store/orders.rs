//! Orders the worker has seen, and the customers they belong to.

use crate::domain::commands::{Customer, ExternalPayment};
use crate::domain::{Order, OrderStatus, PaymentSource, Secret};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

/// Records a placed order and its customer (one statement: the customer is upserted
/// in a CTE, and the foreign key is checked at the end of the statement), replacing
/// what an earlier message said.
pub async fn record_placed(conn: &mut PgConnection, order: &Order) -> sqlx::Result<()> {
    let (kind, external) = match &order.payment_source {
        Some(PaymentSource::External(p)) => (Some("external_payments"), Some(p)),
        Some(PaymentSource::Unsupported { kind }) => (Some(kind.as_str()), None),
        None => (None, None),
    };
    sqlx::query(
        "WITH customer AS (
             INSERT INTO customers (id, email) SELECT $2, $13 WHERE $2 IS NOT NULL
             ON CONFLICT (id) DO UPDATE SET email = COALESCE(EXCLUDED.email, customers.email))
         INSERT INTO orders (id, customer_id, number, status, guest, currency_code,
             total_amount_cents, payment_source_type, payment_source_id, gateway_id,
             payment_source_token, payment_source_metadata, placed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
         ON CONFLICT (id) DO UPDATE SET customer_id = EXCLUDED.customer_id,
             number = EXCLUDED.number, status = EXCLUDED.status, guest = EXCLUDED.guest,
             currency_code = EXCLUDED.currency_code,
             total_amount_cents = EXCLUDED.total_amount_cents,
             payment_source_type = EXCLUDED.payment_source_type,
             payment_source_id = EXCLUDED.payment_source_id,
             gateway_id = EXCLUDED.gateway_id,
             payment_source_token = EXCLUDED.payment_source_token,
             payment_source_metadata = EXCLUDED.payment_source_metadata,
             placed_at = COALESCE(orders.placed_at, now()), updated_at = now()",
    )
    .bind(&order.id)
    .bind(order.customer.as_ref().map(|c| &c.id))
    .bind(&order.number)
    .bind(order.status.as_str())
    .bind(order.customer.is_none())
    .bind(&order.currency_code)
    .bind(order.total_amount_cents)
    .bind(kind)
    .bind(external.map(|p| &p.id))
    .bind(external.map(|p| &p.gateway_id))
    .bind(external.map(|p| p.token.expose()))
    .bind(sqlx::types::Json(
        external.map(|p| p.metadata.clone()).unwrap_or_default(),
    ))
    .bind(order.customer.as_ref().and_then(|c| c.email.as_ref()))
    .execute(conn)
    .await?;
    Ok(())
}

/// The order as `order.placed` described it, for `wallet.save`.
pub async fn find(pool: &PgPool, order_id: &str) -> sqlx::Result<Option<Order>> {
    let row = sqlx::query(
        "SELECT o.id, o.number, o.status, o.guest, o.currency_code, o.total_amount_cents,
                o.payment_source_type, o.payment_source_id, o.gateway_id,
                o.payment_source_token, o.payment_source_metadata,
                o.customer_id, c.email
         FROM orders o LEFT JOIN customers c ON c.id = o.customer_id
         WHERE o.id = $1 AND o.placed_at IS NOT NULL",
    )
    .bind(order_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let customer_id: Option<String> = row.try_get("customer_id")?;
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
                gateway_id: row
                    .try_get::<Option<String>, _>("gateway_id")?
                    .unwrap_or_default(),
                token: Secret::new(
                    row.try_get::<Option<String>, _>("payment_source_token")?
                        .unwrap_or_default(),
                ),
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

/// Records that an order in checkout pays with a stored source, unless the order is
/// already placed, approved or cancelled (then its payment source never changes):
/// false in that case. One statement, so an `order.placed` committing meanwhile is
/// either seen here or comes after.
pub async fn record_attachment(
    conn: &mut PgConnection,
    order_id: &str,
    customer_id: &str,
    status: &OrderStatus,
    customer_payment_source_id: &str,
) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "INSERT INTO orders (id, customer_id, status, customer_payment_source_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET
             customer_payment_source_id = EXCLUDED.customer_payment_source_id,
             updated_at = now()
         WHERE orders.placed_at IS NULL AND orders.status <> ALL($5)
         RETURNING 1",
    )
    .bind(order_id)
    .bind(customer_id)
    .bind(status.as_str())
    .bind(customer_payment_source_id)
    .bind(OrderStatus::LOCKED)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}
