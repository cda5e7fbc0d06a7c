//! Saving an order's payment source into the customer's wallet (docs/interface.md, the token_url call), in three
//! steps: [`check`] what can be refused before any HTTP call (guest, unsupported source,
//! unknown or disabled gateway, open circuit, already processed), [`call`] the gateway's
//! token_url, and [`record`] its answer as the change to commit. The commit decides
//! again what depends on stored state (gateway still enabled, card held, cap).

use super::{Context, HandlerError, RetryLater};
use crate::domain::events::{self, SaveFailure, WalletSaveFailed};
use crate::domain::ids::GatewayId;
use crate::domain::{
    Customer, Effect, ErrorKind, ExternalPayment, Meta, Order, PaymentSource, SaveSource,
};
use crate::gateway::{GatewayError, GatewayTarget, SaveRequest, Tokens, validate_token_url};
use crate::metrics as m;
use crate::store::gateways::{self, Gateway};
use crate::store::inbox;
use chrono::Utc;
use reqwest::Url;
use serde_json::{Map, Value};

/// What saving decided. (It lives for one call and is moved once: boxing the large
/// variant would only add an allocation per message.)
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Commit this effect.
    Commit(Effect),
    /// The message was processed meanwhile (a redelivery): do nothing.
    Duplicate,
    Retry(RetryLater),
}

/// A save that passed the checks: who, what, and where to call.
struct Ready<'a> {
    customer: &'a Customer,
    payment: &'a ExternalPayment,
    gateway: Gateway,
    target: GatewayTarget,
}

pub async fn save(ctx: &Context, meta: &Meta, order: &Order) -> Result<Decision, HandlerError> {
    let ready = match check(ctx, meta, order).await? {
        Ok(ready) => ready,
        Err(decision) => return Ok(decision),
    };
    let answer = call(ctx, order, &ready).await;
    record(ctx, meta, order, ready, answer).await
}

/// Why a save is refused, as `wallet.save_failed` tells it: reason and message.
type Refusal = (SaveFailure, String);

/// The refusals and waits decided before any HTTP call.
async fn check<'a>(
    ctx: &Context,
    meta: &Meta,
    order: &'a Order,
) -> Result<Result<Ready<'a>, Decision>, HandlerError> {
    let refuse = |(reason, message): Refusal| Ok(Err(refusal(meta, order, reason, message)));
    let (customer, payment) = match saveable(order) {
        Ok(found) => found,
        Err(why) => return refuse(why),
    };
    let Some(gateway) = ctx.gateways.find(&payment.gateway_id).await? else {
        let message = format!("no gateway {} is registered", payment.gateway_id);
        return refuse((SaveFailure::UnknownGateway, message));
    };
    let token_url = match usable_token_url(&gateway) {
        Ok(url) => url,
        Err(why) => return refuse(why),
    };
    if let Some(wait) = circuit_wait(&gateway) {
        return Ok(Err(Decision::Retry(wait)));
    }
    // A redelivery may already have its effect: then the gateway must not be called
    // again. (A first delivery is checked by the commit alone; if a publisher sent the
    // same id twice, the repeated call carries the same Idempotency-Key.)
    if meta.maybe_seen && inbox::is_processed(&ctx.pool, &meta.id).await? {
        return Ok(Err(Decision::Duplicate));
    }
    let target = GatewayTarget {
        id: gateway.id.clone(),
        token_url,
        secret: gateway.secret.clone(),
    };
    Ok(Ok(Ready {
        customer,
        payment,
        gateway,
        target,
    }))
}

/// The customer and the external payment source of an order whose source can be
/// saved.
fn saveable(order: &Order) -> Result<(&Customer, &ExternalPayment), Refusal> {
    let Some(customer) = &order.customer else {
        let message = "guest orders cannot save payment sources".into();
        return Err((SaveFailure::GuestCustomer, message));
    };
    match &order.payment_source {
        Some(PaymentSource::External(payment)) => Ok((customer, payment)),
        Some(PaymentSource::Unsupported { kind }) => Err((
            SaveFailure::UnsupportedPaymentSource,
            format!("payment source type {kind} cannot be saved; only external_payments"),
        )),
        None => Err((
            SaveFailure::UnsupportedPaymentSource,
            "the order has no payment source".into(),
        )),
    }
}

/// The token_url of a gateway that is enabled and has a usable one.
fn usable_token_url(gateway: &Gateway) -> Result<Url, Refusal> {
    if !gateway.enabled {
        let message = format!("gateway {} is disabled", gateway.id);
        return Err((SaveFailure::GatewayDisabled, message));
    }
    validate_token_url(&gateway.token_url).map_err(|err| {
        let message = format!("gateway {} has an unusable token_url: {err}", gateway.id);
        (SaveFailure::UnknownGateway, message)
    })
}

/// The wait while the gateway's circuit is open, if it is.
fn circuit_wait(gateway: &Gateway) -> Option<RetryLater> {
    let left = gateway.circuit_open_for(Utc::now())?;
    metrics::gauge!(m::CIRCUIT_OPEN, "gateway" => gateway.id.clone()).set(1.0);
    Some(RetryLater {
        kind: ErrorKind::GatewayUnavailable,
        detail: format!("circuit open for gateway {}", gateway.id),
        counts_as_attempt: false,
        not_before: Some(left),
    })
}

/// The token_url call (retried in-process with backoff by the client).
async fn call(ctx: &Context, order: &Order, ready: &Ready<'_>) -> Result<Tokens, GatewayError> {
    let request = SaveRequest {
        order,
        customer: ready.customer,
        payment: ready.payment,
    };
    ctx.gateway.save(&ready.target, &request).await
}

/// Turns the gateway's answer into the change to commit, and keeps the circuit's
/// shared state up to date.
async fn record(
    ctx: &Context,
    meta: &Meta,
    order: &Order,
    ready: Ready<'_>,
    answer: Result<Tokens, GatewayError>,
) -> Result<Decision, HandlerError> {
    let gateway = &ready.gateway;
    match answer {
        Ok(tokens) => {
            if gateway.consecutive_failures > 0 || gateway.circuit_open_until.is_some() {
                gateways::record_success(&ctx.pool, &gateway.id).await?;
                ctx.gateways.forget(&gateway.id).await;
                metrics::gauge!(m::CIRCUIT_OPEN, "gateway" => gateway.id.clone()).set(0.0);
            }
            let mut metadata = ready.payment.metadata.clone();
            metadata.extend(tokens.metadata);
            Ok(Decision::Commit(Effect::SaveSource(SaveSource {
                order_id: order.id.clone(),
                customer_id: ready.customer.id.clone(),
                // The gateway was found by this id.
                gateway_id: ready.payment.gateway_id.clone(),
                name: source_name(&ready.payment.gateway_id, &metadata),
                metadata,
                reference: ready.payment.id.clone(),
                customer_token: tokens.customer_token,
                payment_source_token: tokens.payment_source_token,
            })))
        }
        Err(GatewayError::Refused { code, message }) => Ok(refusal(
            meta,
            order,
            SaveFailure::GatewayRefused,
            format!("gateway {} refused: {code}: {message}", gateway.id),
        )),
        Err(err) => {
            let threshold = ctx.circuit.threshold;
            let opened =
                gateways::record_failure(&ctx.pool, &gateway.id, threshold, ctx.circuit.cool_down)
                    .await?;
            ctx.gateways.forget(&gateway.id).await;
            if opened {
                metrics::gauge!(m::CIRCUIT_OPEN, "gateway" => gateway.id.clone()).set(1.0);
                tracing::warn!(
                    gateway = %gateway.id,
                    error = format!("{err:#}"),
                    "circuit opened after repeated failures"
                );
            }
            Ok(Decision::Retry(RetryLater {
                kind: err.kind().unwrap_or(ErrorKind::GatewayUnavailable),
                detail: err.to_string(),
                counts_as_attempt: true,
                not_before: err.retry_after(),
            }))
        }
    }
}

/// `wallet.save_failed`, decided before the commit.
fn refusal(meta: &Meta, order: &Order, reason: SaveFailure, message: String) -> Decision {
    let event = events::outbound(
        meta,
        WalletSaveFailed {
            order_id: order.id.clone(),
            customer_id: order.customer.as_ref().map(|c| c.id.clone()),
            reason,
            message,
        },
    );
    Decision::Commit(Effect::Emit(event))
}

/// A name people recognise: `Visa ending in 4242`, else the gateway's name.
fn source_name(gateway_id: &GatewayId, metadata: &Map<String, Value>) -> String {
    let text = |key| metadata.get(key).and_then(Value::as_str);
    match (text("brand"), text("last4")) {
        (Some(brand), Some(last4)) => {
            let mut chars = brand.chars();
            let brand: String = chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            format!("{brand} ending in {last4}")
        }
        _ => format!("{gateway_id} payment source"),
    }
}
