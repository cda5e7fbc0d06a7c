//! What sealing adds per message, away from a noisy machine's other work: the sealing
//! a save (`order.placed` with the flag) costs the worker in CPU time, measured in a
//! loop. `cargo run --release --example seal_cost`. Prints; asserts nothing.

use std::time::Instant;
use wallet_worker::crypto::{DataKeys, FingerprintKey, Keyring, Row};
use wallet_worker::domain::Secret;

fn main() {
    let keys = Keyring::new(
        DataKeys::parse(&DataKeys::generate_entry("bench")).expect("keys"),
        FingerprintKey::generate(),
    );
    let token = Secret::new("tok_8HfQ2kLm9PzX4cVb");
    let body = vec![b'x'; 560]; // a wallet.saved body
    let row = |table, column, id| Row { table, column, id };
    let rounds = 200_000;
    let started = Instant::now();
    for i in 0..rounds {
        let id = if i % 2 == 0 {
            "QgDXpwsqDx"
        } else {
            "AbCdEfGh12"
        };
        // The order's token, the card's fingerprint and both tokens, the event's body.
        std::hint::black_box(keys.seal_secret(&token, row("orders", "payment_source_token", id)));
        std::hint::black_box(keys.fingerprint("sim", &token));
        std::hint::black_box(keys.seal_secret(
            &token,
            row("customer_payment_sources", "customer_token", id),
        ));
        std::hint::black_box(keys.seal_secret(
            &token,
            row("customer_payment_sources", "payment_source_token", id),
        ));
        std::hint::black_box(keys.seal(&body, row("outbox", "body", id)));
    }
    let per_save = started.elapsed().as_secs_f64() / f64::from(rounds) * 1e6;
    let sealed = keys.seal(&body, row("outbox", "body", "e"));
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(
            keys.open(&sealed.key_id, &sealed.bytes, row("outbox", "body", "e"))
                .ok(),
        );
    }
    let per_open = started.elapsed().as_secs_f64() / f64::from(rounds) * 1e6;
    println!(
        "seal_cost: {per_save:.2} µs of sealing per save (4 seals, 1 fingerprint); {per_open:.2} µs to open a 560-byte body"
    );
}
