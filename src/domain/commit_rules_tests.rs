//! The commit rules on wallets built in memory: what each change decides, and what the
//! store is then asked to write.

use super::*;
use crate::domain::ids::{GatewayId, MessageId, OrderId};
use crate::domain::{MessageType, OrderStatus};
use chrono::{Duration, TimeZone};
use serde_json::{Map, Value};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
}

fn cause(kind: MessageType) -> Meta {
    Meta {
        id: MessageId::stored("msg_1".into()),
        kind,
        occurred_at: now(),
        correlation_id: Some("corr_1".into()),
        maybe_seen: false,
    }
}

fn source(id: &str, token: u8, age_days: i64) -> Source {
    Source {
        id: SourceId::stored(id.into()),
        gateway_id: GatewayId::stored("acme-pay".into()),
        name: "Visa ending in 4242".into(),
        metadata: Map::new(),
        reference: None,
        fingerprint: Fingerprint([token; 32]),
        created_at: now() - Duration::days(age_days),
        expires_at: None,
        gateway_enabled: true,
    }
}

fn wallet(customer: &str, sources: Vec<Source>, chosen: Option<&str>) -> (String, Wallet) {
    let wallet = Wallet {
        customer_id: CustomerId::stored(customer.into()),
        sources,
        chosen_default: chosen.map(|id| SourceId::stored(id.into())),
    };
    (customer.to_owned(), wallet)
}

/// Jane holds `a` (her default) and `b`; John holds `j`. acme-pay is enabled.
fn rules() -> CommitRules {
    let wallets = [
        wallet(
            "jane",
            vec![source("a", 1, 2), source("b", 2, 1)],
            Some("a"),
        ),
        wallet("john", vec![source("j", 3, 1)], None),
    ];
    let gateways = [("acme-pay".to_owned(), true)];
    CommitRules::new(
        now(),
        3,
        wallets.into_iter().collect(),
        gateways.into_iter().collect(),
    )
}

fn target(customer: &str, source: &str) -> SourceRef {
    SourceRef {
        customer_id: CustomerId::stored(customer.into()),
        customer_payment_source_id: SourceId::stored(source.into()),
    }
}

fn attach(customer: &str, source: &str, status: &str) -> WalletAttach {
    WalletAttach {
        order_id: OrderId::stored("order_1".into()),
        order_status: OrderStatus::stored(status.into()),
        customer_id: CustomerId::stored(customer.into()),
        customer_payment_source_id: SourceId::stored(source.into()),
    }
}

fn save(customer: &str, gateway: &str) -> SaveSource {
    SaveSource {
        order_id: OrderId::stored("order_1".into()),
        customer_id: CustomerId::stored(customer.into()),
        gateway_id: GatewayId::stored(gateway.into()),
        name: "Visa ending in 1111".into(),
        metadata: Map::new(),
        reference: "ops_1".into(),
        customer_token: Secret::new("cus_1"),
        payment_source_token: Secret::new("tok_1"),
    }
}

fn tokens(_: &Source) -> Result<(Secret, Secret), ()> {
    Ok((Secret::new("cus_1"), Secret::new("tok_1")))
}

/// The event's type and its `data`.
fn read(event: &OutboundEvent) -> (&'static str, Value) {
    let body: Value = serde_json::from_slice(&event.body).expect("an event is JSON");
    (event.kind.as_str(), body["data"].clone())
}

#[test]
fn another_customers_source_is_not_found_for_attach_remove_and_default() {
    let mut rules = rules();
    let attached = rules.attach(
        &cause(MessageType::WalletAttach),
        &attach("jane", "j", "pending"),
        (0, 0),
        tokens,
    );
    let (kind, data) = read(&attached.unwrap());
    assert_eq!(kind, "wallet.attach_rejected");
    assert_eq!(data["reason"], "not_found");
    let removed = rules.remove(&cause(MessageType::WalletRemove), &target("jane", "j"));
    assert_eq!(read(&removed).1["reason"], "not_found");
    let default = rules.set_default(&cause(MessageType::WalletSetDefault), &target("jane", "j"));
    assert_eq!(read(&default).1["reason"], "not_found");
    assert!(rules.changes().removed.is_empty(), "John keeps his source");
}

#[test]
fn a_default_change_is_written_as_the_customers_new_default() {
    let mut rules = rules();
    let event = rules.set_default(&cause(MessageType::WalletSetDefault), &target("jane", "b"));
    let (kind, data) = read(&event);
    assert_eq!(kind, "wallet.default_set");
    assert_eq!(data["customer_payment_source_id"], "b");
    assert_eq!(rules.changes().defaults, vec![("jane", Some("b"))]);
}

#[test]
fn removing_the_default_names_the_next_one_and_writes_both() {
    let mut rules = rules();
    let event = rules.remove(&cause(MessageType::WalletRemove), &target("jane", "a"));
    let (kind, data) = read(&event);
    assert_eq!(kind, "wallet.removed");
    assert_eq!(data["default_customer_payment_source_id"], "b");
    let changes = rules.changes();
    assert_eq!(changes.removed, vec!["a"]);
    assert_eq!(changes.defaults, vec![("jane", Some("b"))]);
}

#[test]
fn a_save_to_a_disabled_or_removed_gateway_fails_and_creates_nothing() {
    let mut rules = rules();
    rules.gateways.insert("off-pay".into(), false);
    let cause = cause(MessageType::WalletSave);
    let (event, created) = rules.save(&cause, &save("jane", "off-pay"), Fingerprint([9; 32]));
    assert_eq!(read(&event).1["reason"], "gateway_disabled");
    assert_eq!(created, None);
    let (event, _) = rules.save(&cause, &save("jane", "gone-pay"), Fingerprint([9; 32]));
    assert_eq!(read(&event).1["reason"], "unknown_gateway");
    assert!(rules.changes().created.is_empty());
}

#[test]
fn a_new_card_is_created_and_the_same_card_again_is_reused() {
    let mut rules = rules();
    let cause = cause(MessageType::WalletSave);
    let (event, created) = rules.save(&cause, &save("jane", "acme-pay"), Fingerprint([9; 32]));
    let (kind, data) = read(&event);
    assert_eq!(kind, "wallet.saved");
    assert_eq!(data["created"], true);
    assert_eq!(data["customer_payment_source"]["default"], false);
    let id = created.expect("a new source");
    let (event, again) = rules.save(&cause, &save("jane", "acme-pay"), Fingerprint([9; 32]));
    assert_eq!(read(&event).1["created"], false);
    assert_eq!(again, None);
    let changes = rules.changes();
    assert_eq!(changes.created.len(), 1);
    assert_eq!(changes.created[0].1.id, id);
}

#[test]
fn a_save_beyond_the_cap_fails_with_wallet_full() {
    let mut rules = rules();
    let cause = cause(MessageType::WalletSave);
    rules.save(&cause, &save("jane", "acme-pay"), Fingerprint([8; 32]));
    let (event, created) = rules.save(&cause, &save("jane", "acme-pay"), Fingerprint([9; 32]));
    assert_eq!(read(&event).1["reason"], "wallet_full");
    assert_eq!(created, None);
}

#[test]
fn an_attach_to_a_placed_order_is_refused_before_the_tokens_are_opened() {
    let mut rules = rules();
    let attached = rules.attach(
        &cause(MessageType::WalletAttach),
        &attach("jane", "a", "placed"),
        (0, 0),
        |_| -> Result<(Secret, Secret), ()> { panic!("no tokens for a refused attach") },
    );
    assert_eq!(read(&attached.unwrap()).1["reason"], "order_not_editable");
    assert!(rules.changes().attachments.is_empty());
}

#[test]
fn an_attach_the_store_could_not_record_becomes_order_not_editable() {
    let mut rules = rules();
    let attached = rules.attach(
        &cause(MessageType::WalletAttach),
        &attach("jane", "a", "pending"),
        (0, 0),
        tokens,
    );
    let (kind, data) = read(attached.as_ref().unwrap());
    assert_eq!(kind, "wallet.attached");
    assert_eq!(data["payment_source"]["customer_token"], "cus_1");
    assert_eq!(rules.changes().attachments.len(), 1);
    let mut events = vec![Some(vec![attached.unwrap()])];
    rules.reject_unattached(&HashSet::new(), &mut events);
    let (kind, data) = read(&events[0].as_ref().unwrap()[0]);
    assert_eq!(kind, "wallet.attach_rejected");
    assert_eq!(data["reason"], "order_not_editable");
}

#[test]
fn a_token_that_does_not_open_fails_the_attach() {
    let mut rules = rules();
    let attached = rules.attach(
        &cause(MessageType::WalletAttach),
        &attach("jane", "a", "pending"),
        (0, 0),
        |_| Err("sealed under a lost key"),
    );
    assert_eq!(attached.unwrap_err(), "sealed under a lost key");
    assert!(rules.changes().attachments.is_empty());
}
