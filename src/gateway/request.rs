//! What is sent to a `token_url`: the target gateway, the JSON:API document and the
//! idempotency key (docs/interface.md, the token_url call).

use crate::domain::commands::Customer;
use crate::domain::{ExternalPayment, Order, Secret};
use reqwest::Url;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// A gateway as stored by `gateway set`: where to call and the key to sign with.
#[derive(Debug, Clone)]
pub struct GatewayTarget {
    pub id: String,
    pub token_url: Url,
    pub secret: Secret,
}

/// One order's external payment source, to be exchanged for reusable tokens.
#[derive(Debug, Clone, Copy)]
pub struct SaveRequest<'a> {
    pub order: &'a Order,
    pub customer: &'a Customer,
    pub payment: &'a ExternalPayment,
}

impl SaveRequest<'_> {
    /// Stable for one order's payment source, so every retry — in-process or after a
    /// broker redelivery — lets the gateway recognise the call and store the card once.
    /// Ids are percent-encoded (including `:` and `%`) so the key is always a valid
    /// header value and two different id pairs never give the same key.
    pub fn idempotency_key(&self) -> String {
        format!(
            "wallet-save:{}:{}",
            encode(&self.order.id),
            encode(&self.payment.id)
        )
    }

    /// The JSON:API document, serialized once: its bytes are what is signed and what
    /// is sent on every attempt.
    pub fn body(&self) -> Vec<u8> {
        let (order, customer, payment) = (self.order, self.customer, self.payment);
        let document = json!({
            "data": {
                "type": "external_payments",
                "id": payment.id,
                "attributes": {
                    "payment_source_token": payment.token.expose(),
                    "metadata": payment.metadata,
                },
                "relationships": {
                    "order": { "data": { "type": "orders", "id": order.id } }
                }
            },
            "included": [
                {
                    "type": "orders",
                    "id": order.id,
                    "attributes": {
                        "number": order.number,
                        "status": order.status,
                        "currency_code": order.currency_code,
                        "total_amount_cents": order.total_amount_cents,
                    },
                    "relationships": {
                        "customer": { "data": { "type": "customers", "id": customer.id } }
                    }
                },
                {
                    "type": "customers",
                    "id": customer.id,
                    "attributes": { "email": customer.email }
                }
            ]
        });
        // `Value`'s Display cannot fail, unlike `to_vec` on arbitrary types.
        Value::to_string(&document).into_bytes()
    }
}

fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_graphic() && byte != b':' && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderStatus;
    use crate::domain::ids::{CustomerId, GatewayId, OrderId};
    use serde_json::Map;

    fn fixture() -> (Order, Customer, ExternalPayment) {
        let customer = Customer {
            id: CustomerId::stored("kWnEhpRgYD".into()),
            email: Some("jane@example.com".into()),
        };
        let payment = ExternalPayment {
            id: "yZlPsRkQvB".into(),
            gateway_id: GatewayId::stored("acme-pay".into()),
            token: Secret::new("tok_1a2b3c"),
            metadata: Map::from_iter([("last4".to_owned(), json!("4242"))]),
        };
        let order = Order {
            id: OrderId::stored("qaMAhZkZvd".into()),
            number: Some("1234".into()),
            status: OrderStatus::stored("placed".into()),
            customer: Some(customer.clone()),
            currency_code: Some("EUR".into()),
            total_amount_cents: Some(12900),
            payment_source: None,
            save_to_wallet: true,
        };
        (order, customer, payment)
    }

    #[test]
    fn the_body_is_the_json_api_document_of_the_contract() {
        let (order, customer, payment) = fixture();
        let req = SaveRequest {
            order: &order,
            customer: &customer,
            payment: &payment,
        };
        let doc: Value = serde_json::from_slice(&req.body()).expect("valid JSON");
        assert_eq!(doc["data"]["type"], "external_payments");
        assert_eq!(
            doc["data"]["attributes"]["payment_source_token"],
            "tok_1a2b3c"
        );
        assert_eq!(doc["data"]["attributes"]["metadata"]["last4"], "4242");
        assert_eq!(
            doc["data"]["relationships"]["order"]["data"]["id"],
            "qaMAhZkZvd"
        );
        assert_eq!(
            doc["included"][0]["attributes"]["total_amount_cents"],
            12900
        );
        assert_eq!(
            doc["included"][0]["relationships"]["customer"]["data"]["id"],
            "kWnEhpRgYD"
        );
        assert_eq!(
            doc["included"][1]["attributes"]["email"],
            "jane@example.com"
        );
        assert_eq!(req.body(), req.body(), "serialization is deterministic");
    }

    #[test]
    fn the_idempotency_key_is_a_header_safe_function_of_the_ids_only() {
        let (mut order, customer, mut payment) = fixture();
        let req = SaveRequest {
            order: &order,
            customer: &customer,
            payment: &payment,
        };
        assert_eq!(req.idempotency_key(), "wallet-save:qaMAhZkZvd:yZlPsRkQvB");
        order.id = OrderId::stored("a:b é".into());
        payment.id = "100%".into();
        let req = SaveRequest {
            order: &order,
            customer: &customer,
            payment: &payment,
        };
        assert_eq!(req.idempotency_key(), "wallet-save:a%3Ab%20%C3%A9:100%25");
        assert!(!req.idempotency_key().contains("tok_"));
    }
}
