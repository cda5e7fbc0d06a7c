//! Property tests of the inbound parse (docs/messages.md, inbound messages; docs/operations.md, failure handling): every valid message within the
//! bounds of `domain::limits` parses into exactly the values it carried, and each single
//! mutation of a field (removed, mistyped, null, empty, control characters, over its
//! limit) is refused by a rejection naming that field.

mod properties {
    pub mod messages;
    pub mod mutations;
}

use properties::messages::{
    expected, order_placed, parse_as, saving_order, typed, wallet_attach, wallet_change,
    wallet_save,
};
use properties::mutations::{
    ORDER_PLACED, WALLET_ATTACH, WALLET_CHANGE, WALLET_SAVE, assert_each_mutation_is_named, mutated,
};
use proptest::prelude::*;
use serde_json::json;

const ROUTING_KEYS: [&str; 6] = [
    "order.placed",
    "wallet.save",
    "wallet.attach",
    "wallet.remove",
    "wallet.set_default",
    "order.cancelled",
];

proptest! {
    // Bounded so the whole file runs in a few seconds; a failure is shrunk and printed.
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_valid_message_parses_into_the_values_it_carries(
        message in prop_oneof![order_placed(), wallet_save(), wallet_attach(), wallet_change()]
    ) {
        let inbound = parse_as(message["type"].as_str().unwrap(), &message);
        let inbound = inbound.unwrap_or_else(|rejection| panic!("{rejection} for {message}"));
        prop_assert_eq!(typed(&inbound), expected(&message));
    }

    #[test]
    fn every_mutation_of_an_order_placed_is_refused_naming_the_mutated_field(message in saving_order()) {
        assert_each_mutation_is_named(&message, ORDER_PLACED);
    }

    #[test]
    fn every_mutation_of_a_wallet_save_or_attach_is_refused_naming_the_mutated_field(
        save in wallet_save(),
        attach in wallet_attach(),
    ) {
        assert_each_mutation_is_named(&save, WALLET_SAVE);
        assert_each_mutation_is_named(&attach, WALLET_ATTACH);
    }

    #[test]
    fn every_mutation_of_a_wallet_remove_or_set_default_is_refused_naming_the_mutated_field(
        change in wallet_change(),
    ) {
        assert_each_mutation_is_named(&change, WALLET_CHANGE);
    }

    #[test]
    fn a_message_under_another_routing_key_or_type_is_refused_naming_type(
        message in prop_oneof![order_placed(), wallet_save(), wallet_attach(), wallet_change()],
        other in 0..ROUTING_KEYS.len(),
    ) {
        let (key, own) = (ROUTING_KEYS[other], message["type"].as_str().unwrap());
        prop_assume!(key != own);
        prop_assert_eq!(parse_as(key, &message).expect_err("wrong routing key").field, "type");
        let retyped = mutated(&message, "type", Some(json!(key)));
        prop_assert_eq!(parse_as(own, &retyped).expect_err("wrong type").field, "type");
    }
}
