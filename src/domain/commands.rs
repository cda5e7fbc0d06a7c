//! The inbound commands (docs/messages.md, inbound messages) as typed values, validated field by field.

use super::ids::{CustomerId, GatewayId, OrderId, SourceId};
use super::limits::{
    MAX_ID_LEN, MAX_METADATA_BYTES, MAX_METADATA_KEYS, MAX_TEXT_LEN, MAX_TOKEN_LEN, text,
};
use super::rejection::Rejection;
use super::secret::Secret;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A parsed inbound message body.
#[derive(Debug, Clone)]
pub enum Command {
    OrderPlaced(OrderPlaced),
    WalletSave(WalletSave),
    WalletAttach(WalletAttach),
    WalletRemove(SourceRef),
    WalletSetDefault(SourceRef),
}

impl Command {
    /// The order the message is about, when it names one (for dead-letter events).
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            Self::OrderPlaced(cmd) => Some(&cmd.order.id),
            Self::WalletSave(cmd) => Some(&cmd.order_id),
            Self::WalletAttach(cmd) => Some(&cmd.order_id),
            Self::WalletRemove(_) | Self::WalletSetDefault(_) => None,
        }
    }
}

/// `order.placed`: record the order, and maybe save its payment source.
#[derive(Debug, Clone)]
pub struct OrderPlaced {
    pub order: Order,
}

/// `wallet.save`: save the payment source of an order already placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletSave {
    pub order_id: OrderId,
}

/// `wallet.attach`: attach a stored customer payment source to an order in checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletAttach {
    pub order_id: OrderId,
    pub order_status: OrderStatus,
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
}

/// `wallet.remove` and `wallet.set_default`: one source of one customer's wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub customer_id: CustomerId,
    pub customer_payment_source_id: SourceId,
}

/// An order's status as the pipeline reports it. Only whether it still lets the
/// payment source change matters here.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct OrderStatus(String);

impl OrderStatus {
    /// Statuses in which an order's payment source can no longer change. The store's
    /// conditional writes take this list too, so it is spelled out once.
    pub const LOCKED: [&'static str; 3] = ["placed", "approved", "cancelled"];

    /// A status from a message (non-empty text, no control characters).
    pub fn parse(value: &str, field: &str) -> Result<Self, Rejection> {
        text(value, field, MAX_TEXT_LEN).map(Self)
    }

    /// A status read back from the store, where only parsed statuses are written.
    pub fn stored(value: String) -> Self {
        Self(value)
    }

    pub fn is_editable(&self) -> bool {
        !Self::LOCKED.contains(&self.0.as_str())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order as `order.placed` describes it.
#[derive(Debug, Clone)]
pub struct Order {
    pub id: OrderId,
    pub number: Option<String>,
    pub status: OrderStatus,
    /// `None` for a guest order (docs/messages.md, inbound messages: `guest: true` or no customer).
    pub customer: Option<Customer>,
    pub currency_code: Option<String>,
    pub total_amount_cents: Option<i64>,
    pub payment_source: Option<PaymentSource>,
    pub save_to_wallet: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub email: Option<String>,
}

/// The order's payment source; only `external_payments` can be saved.
#[derive(Debug, Clone)]
pub enum PaymentSource {
    External(ExternalPayment),
    Unsupported { kind: String },
}

#[derive(Debug, Clone)]
pub struct ExternalPayment {
    /// The order payment source's own id (a source's `reference` once saved).
    pub id: String,
    pub gateway_id: GatewayId,
    pub token: Secret,
    pub metadata: Map<String, Value>,
}

// ---- wire shapes (private): everything optional, validated into the types above ----

#[derive(Deserialize)]
pub(crate) struct OrderPlacedData {
    order: OrderData,
}

#[derive(Deserialize)]
struct OrderData {
    id: String,
    #[serde(default)]
    number: Option<String>,
    status: String,
    #[serde(default)]
    customer: Option<CustomerData>,
    #[serde(default)]
    guest: bool,
    #[serde(default)]
    currency_code: Option<String>,
    #[serde(default)]
    total_amount_cents: Option<i64>,
    #[serde(default)]
    payment_source: Option<PaymentSourceData>,
    #[serde(default)]
    save_payment_source_to_customer_wallet: bool,
}

#[derive(Deserialize)]
struct CustomerData {
    id: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct PaymentSourceData {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    gateway_id: Option<String>,
    #[serde(default)]
    payment_source_token: Option<Secret>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
pub(crate) struct WalletSaveData {
    order_id: String,
}

#[derive(Deserialize)]
pub(crate) struct WalletAttachData {
    order: AttachOrderData,
    customer_payment_source_id: String,
}

#[derive(Deserialize)]
pub(crate) struct SourceRefData {
    customer_id: String,
    customer_payment_source_id: String,
}

#[derive(Deserialize)]
struct AttachOrderData {
    id: String,
    status: String,
    customer: CustomerData,
}

impl OrderPlaced {
    pub(crate) fn parse(data: OrderPlacedData) -> Result<Self, Rejection> {
        let o = data.order;
        let customer = match (o.guest, o.customer) {
            (false, Some(c)) => Some(Customer {
                id: CustomerId::parse(&c.id, "data.order.customer.id")?,
                email: optional_text(c.email, "data.order.customer.email")?,
            }),
            _ => None,
        };
        let payment_source = o
            .payment_source
            .map(|ps| PaymentSource::parse(ps, "data.order.payment_source"))
            .transpose()?;
        Ok(Self {
            order: Order {
                id: OrderId::parse(&o.id, "data.order.id")?,
                number: optional_text(o.number, "data.order.number")?,
                status: OrderStatus::parse(&o.status, "data.order.status")?,
                customer,
                currency_code: optional_text(o.currency_code, "data.order.currency_code")?,
                total_amount_cents: o.total_amount_cents,
                payment_source,
                save_to_wallet: o.save_payment_source_to_customer_wallet,
            },
        })
    }
}

impl PaymentSource {
    fn parse(ps: PaymentSourceData, at: &str) -> Result<Self, Rejection> {
        let kind = text(&ps.kind, &format!("{at}.type"), MAX_TEXT_LEN)?;
        if kind != "external_payments" {
            return Ok(Self::Unsupported { kind });
        }
        let required = |value: Option<String>, field: &str| {
            let path = format!("{at}.{field}");
            let value = value.ok_or_else(|| Rejection::new(&path, "missing field"))?;
            text(&value, &path, MAX_ID_LEN)
        };
        let token_path = format!("{at}.payment_source_token");
        let token = ps
            .payment_source_token
            .ok_or_else(|| Rejection::new(&token_path, "missing field"))?;
        check_token(&token, &token_path)?;
        let mut metadata = ps.metadata.unwrap_or_default();
        super::secret::drop_secret_fields(&mut metadata);
        check_metadata(&metadata, &format!("{at}.metadata"))?;
        Ok(Self::External(ExternalPayment {
            id: required(ps.id, "id")?,
            gateway_id: GatewayId::stored(required(ps.gateway_id, "gateway_id")?),
            token,
            metadata,
        }))
    }
}

impl WalletSave {
    pub(crate) fn parse(data: WalletSaveData) -> Result<Self, Rejection> {
        Ok(Self {
            order_id: OrderId::parse(&data.order_id, "data.order_id")?,
        })
    }
}

impl WalletAttach {
    pub(crate) fn parse(data: WalletAttachData) -> Result<Self, Rejection> {
        Ok(Self {
            order_id: OrderId::parse(&data.order.id, "data.order.id")?,
            order_status: OrderStatus::parse(&data.order.status, "data.order.status")?,
            customer_id: CustomerId::parse(&data.order.customer.id, "data.order.customer.id")?,
            customer_payment_source_id: SourceId::parse(
                &data.customer_payment_source_id,
                "data.customer_payment_source_id",
            )?,
        })
    }
}

impl SourceRef {
    pub(crate) fn parse(data: SourceRefData) -> Result<Self, Rejection> {
        Ok(Self {
            customer_id: CustomerId::parse(&data.customer_id, "data.customer_id")?,
            customer_payment_source_id: SourceId::parse(
                &data.customer_payment_source_id,
                "data.customer_payment_source_id",
            )?,
        })
    }
}

fn optional_text(value: Option<String>, field: &str) -> Result<Option<String>, Rejection> {
    value.map(|v| text(&v, field, MAX_TEXT_LEN)).transpose()
}

pub(crate) fn check_token(token: &Secret, field: &str) -> Result<(), Rejection> {
    if token.is_empty() {
        return Err(Rejection::new(field, "must not be empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::new(
            field,
            format!("longer than the {MAX_TOKEN_LEN}-byte limit"),
        ));
    }
    if token.expose().chars().any(char::is_control) {
        return Err(Rejection::new(field, "contains control characters"));
    }
    Ok(())
}

pub(crate) fn check_metadata(metadata: &Map<String, Value>, field: &str) -> Result<(), Rejection> {
    if metadata.len() > MAX_METADATA_KEYS {
        return Err(Rejection::new(
            field,
            format!("more than the {MAX_METADATA_KEYS}-key limit"),
        ));
    }
    let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
    if size > MAX_METADATA_BYTES {
        return Err(Rejection::new(
            field,
            format!("larger than the {MAX_METADATA_BYTES}-byte limit"),
        ));
    }
    // Postgres stores metadata as jsonb, which cannot hold U+0000: refuse it here rather
    // than fail the insert on every attempt.
    if map_holds_nul(metadata) {
        return Err(Rejection::new(field, "contains a NUL character"));
    }
    Ok(())
}

/// Whether any string in `map` (keys included) holds U+0000. Recursion is bounded by the
/// body's depth limit, checked before parsing.
fn map_holds_nul(map: &Map<String, Value>) -> bool {
    map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v))
}

fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map_holds_nul(map),
        _ => false,
    }
}
