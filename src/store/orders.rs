//! Orders the worker has seen, and the customers they belong to.

use crate::domain::commands::{Customer, ExternalPayment};
use crate::domain::{Order, OrderStatus, PaymentSource, Secret};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool, Row};

/// Records placed orders with one statement, replacing what earlier messages said; their
/// customers are recorded first ([`super::wallet::lock_customers`]). Rows are written in
/// `(customer, order)` order, so concurrent batches take their row locks in the same
/// order; an order named twice keeps the later message's description.
pub async fn record_placed_all(conn: &mut PgConnection, orders: &[&Order]) -> sqlx::Result<()> {
    if orders.is_empty() {
        return Ok(());
    }
    let mut latest: Vec<&Order> = Vec::with_capacity(orders.len());
    for order in orders {
        match latest.iter_mut().find(|o| o.id == order.id) {
            Some(earlier) => *earlier = order,
            None => latest.push(order),
        }
    }
    let customer_of = |o: &Order| o.customer.as_ref().map(|c| c.id.clone());
    latest.sort_by(|a, b| (customer_of(a), &a.id).cmp(&(customer_of(b), &b.id)));
    let mut rows = PlacedRows::default();
    for order in latest {
        rows.push(order);
    }
    sqlx::query(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                 $6::text[], $7::int8[], $8::text[], $9::text[], $10::text[], $11::text[],
                 $12::text[])
             WITH ORDINALITY AS t(id, customer_id, number, status, guest, currency_code,
                 total_amount_cents, payment_source_type, payment_source_id, gateway_id,
                 payment_source_token, metadata, position))
         INSERT INTO orders (id, customer_id, number, status, guest, currency_code,
             total_amount_cents, payment_source_type, payment_source_id, gateway_id,
             payment_source_token, payment_source_metadata, placed_at)
         SELECT id, customer_id, number, status, guest, currency_code, total_amount_cents,
             payment_source_type, payment_source_id, gateway_id, payment_source_token,
             metadata::jsonb, now()
         FROM input ORDER BY position
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
    .bind(&rows.id)
    .bind(&rows.customer_id)
    .bind(&rows.number)
    .bind(&rows.status)
    .bind(&rows.guest)
    .bind(&rows.currency_code)
    .bind(&rows.total_amount_cents)
    .bind(&rows.payment_source_type)
    .bind(&rows.payment_source_id)
    .bind(&rows.gateway_id)
    .bind(&rows.payment_source_token)
    .bind(&rows.metadata)
    .execute(conn)
    .await?;
    Ok(())
}

/// Placed orders as columns, for `UNNEST`.
#[derive(Default)]
struct PlacedRows<'a> {
    id: Vec<&'a str>,
    customer_id: Vec<Option<&'a str>>,
    number: Vec<Option<&'a str>>,
    status: Vec<&'a str>,
    guest: Vec<bool>,
    currency_code: Vec<Option<&'a str>>,
    total_amount_cents: Vec<Option<i64>>,
    payment_source_type: Vec<Option<&'a str>>,
    payment_source_id: Vec<Option<&'a str>>,
    gateway_id: Vec<Option<&'a str>>,
    payment_source_token: Vec<Option<&'a str>>,
    metadata: Vec<String>,
}

impl<'a> PlacedRows<'a> {
    fn push(&mut self, order: &'a Order) {
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
        self.payment_source_token
            .push(external.map(|p| p.token.expose()));
        let metadata = external.map_or_else(Map::new, |p| p.metadata.clone());
        self.metadata.push(Value::Object(metadata).to_string());
    }
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

/// An order in checkout paying with a stored source.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub status: &'a OrderStatus,
    pub customer_payment_source_id: &'a str,
}

/// Records that orders in checkout pay with stored sources, one statement for all,
/// except for orders already placed, approved or cancelled (then the payment source
/// never changes). Returns the ids of the orders recorded: an `order.placed`
/// committing meanwhile is either seen here or comes after. An order named twice keeps
/// the later attachment.
pub async fn record_attachments(
    conn: &mut PgConnection,
    attachments: &[Attachment<'_>],
) -> sqlx::Result<std::collections::HashSet<String>> {
    if attachments.is_empty() {
        return Ok(Default::default());
    }
    let mut latest: Vec<&Attachment<'_>> = Vec::with_capacity(attachments.len());
    for attachment in attachments {
        match latest
            .iter_mut()
            .find(|a| a.order_id == attachment.order_id)
        {
            Some(earlier) => *earlier = attachment,
            None => latest.push(attachment),
        }
    }
    latest.sort_by_key(|a| a.order_id);
    let orders: Vec<&str> = latest.iter().map(|a| a.order_id).collect();
    let customers: Vec<&str> = latest.iter().map(|a| a.customer_id).collect();
    let statuses: Vec<&str> = latest.iter().map(|a| a.status.as_str()).collect();
    let sources: Vec<&str> = latest
        .iter()
        .map(|a| a.customer_payment_source_id)
        .collect();
    let recorded: Vec<String> = sqlx::query_scalar(
        "INSERT INTO orders (id, customer_id, status, customer_payment_source_id)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT (id) DO UPDATE SET
             customer_payment_source_id = EXCLUDED.customer_payment_source_id,
             updated_at = now()
         WHERE orders.placed_at IS NULL AND orders.status <> ALL($5)
         RETURNING id",
    )
    .bind(&orders)
    .bind(&customers)
    .bind(&statuses)
    .bind(&sources)
    .bind(OrderStatus::LOCKED)
    .fetch_all(conn)
    .await?;
    Ok(recorded.into_iter().collect())
}
