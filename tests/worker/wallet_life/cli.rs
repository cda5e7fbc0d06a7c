//! The wallet on the command line (docs/interface.md, command line): `wallet list --all --json` as scripts
//! read it, and `wallet remove` / `wallet set-default` with the events of the messages.

use super::*;

/// Runs `wallet-worker ARGS` against the worker's database and exchange.
pub(super) async fn wallet_cli(w: &TestWorker, args: &[&str]) -> CliOutput {
    let amqp = &w.args.amqp;
    let env = [
        ("AMQP_URL", amqp.amqp_url.as_str()),
        ("WALLET_EXCHANGE", amqp.exchange.as_str()),
    ];
    run_cli_with(&w.args.db.database_url, &env, args).await
}

/// `wallet list CUSTOMER --all --json`, parsed.
pub(super) async fn list_json(w: &TestWorker, customer: &str) -> Vec<Value> {
    let out = wallet_cli(w, &["wallet", "list", customer, "--all", "--json"]).await;
    assert!(out.success, "{}", out.stderr);
    serde_json::from_str(&out.stdout).expect("a JSON array")
}

/// The lines meant for people (JSON log lines, at RUST_LOG=trace, aside).
fn human_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('{')).collect()
}

#[tokio::test]
async fn wallet_list_json_shows_every_contract_field_and_never_a_token() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let valid = saved(&mut w, &customer, "tok_valid_1").await;
    let expired = source_of(
        &send(
            &mut w,
            &card(&unique("ord"), &customer, "tok_old_1", 1, 2020),
        )
        .await,
    );

    let listed = list_json(&w, &customer).await;
    assert_eq!(
        shown(&listed),
        [(valid.clone(), true), (expired.clone(), false)]
    );
    let mut fields: Vec<_> = listed[0]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    fields.sort();
    let mut expected = [
        "id",
        "customer_id",
        "gateway_id",
        "name",
        "metadata",
        "reference",
        "created_at",
        "default",
        "expired",
        "available",
    ];
    expected.sort();
    assert_eq!(fields, expected);
    let first = &listed[0];
    assert_eq!(first["customer_id"], customer.as_str());
    assert_eq!(first["gateway_id"], GATEWAY_ID);
    assert_eq!(first["name"], "Visa ending in 4242");
    assert_eq!(first["metadata"]["last4"], "4242");
    assert!(first["reference"].is_string());
    assert!(
        first["created_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    );
    assert_eq!(
        (first["expired"].as_bool(), first["available"].as_bool()),
        (Some(false), Some(true))
    );
    let old = entry(&listed, &expired);
    assert_eq!(
        (old["expired"].as_bool(), old["available"].as_bool()),
        (Some(true), Some(false))
    );

    let available = wallet_cli(&w, &["wallet", "list", &customer, "--json"]).await;
    let available: Vec<Value> = serde_json::from_str(&available.stdout).expect("JSON");
    assert_eq!(shown(&available), [(valid, true)]);
    let text = wallet_cli(&w, &["wallet", "list", &customer, "--all"]).await;
    assert!(text.success);
    for out in [serde_json::to_string(&listed).unwrap(), text.stdout] {
        for secret in ["tok_valid_1", "tok_old_1", "cus_tok_", "pst_"] {
            assert!(!out.contains(secret), "{secret} printed: {out}");
        }
    }
    w.stop().await;
}

#[tokio::test]
async fn wallet_set_default_and_remove_on_the_command_line_publish_the_events_of_the_messages() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    let b = saved(&mut w, &customer, "tok_b").await;

    let out = wallet_cli(&w, &["wallet", "set-default", &customer, &b]).await;
    assert!(out.success, "{}", out.stderr);
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.default_set");
    assert_eq!(
        event.data(),
        &json!({ "customer_id": customer, "customer_payment_source_id": b })
    );
    assert!(
        event.body["causation_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("cli-"))
    );
    assert_eq!(stored_default(&w, &customer).await, Some(b.clone()));
    assert_eq!(shown(&list_json(&w, &customer).await)[0], (b.clone(), true));

    let out = wallet_cli(&w, &["wallet", "remove", &customer, &b]).await;
    assert!(out.success, "{}", out.stderr);
    let event = w.next_event().await;
    assert_eq!(event.routing_key, "wallet.removed");
    assert_eq!(
        event.data(),
        &json!({ "customer_id": customer, "customer_payment_source_id": b,
                 "default_customer_payment_source_id": a })
    );
    assert_eq!(
        stored_sources(&w, &customer).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(shown(&list_json(&w, &customer).await), [(a, true)]);
    w.stop().await;
}

#[tokio::test]
async fn a_refused_wallet_change_on_the_command_line_is_one_line_with_its_reason_and_fails() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let valid = saved(&mut w, &customer, "tok_v").await;
    let expired =
        source_of(&send(&mut w, &card(&unique("ord"), &customer, "tok_x", 1, 2020)).await);
    let other = unique("cus_other");
    for (args, routing_key, reason) in [
        (
            ["wallet", "remove", &other, &valid],
            "wallet.remove_rejected",
            "not_found",
        ),
        (
            ["wallet", "remove", &customer, "NoSuchOne1"],
            "wallet.remove_rejected",
            "not_found",
        ),
        (
            ["wallet", "set-default", &other, &valid],
            "wallet.default_rejected",
            "not_found",
        ),
        (
            ["wallet", "set-default", &customer, &expired],
            "wallet.default_rejected",
            "expired",
        ),
    ] {
        let out = wallet_cli(&w, &args).await;
        assert!(!out.success, "{args:?} succeeded");
        let lines = human_lines(&out.stderr);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains(reason), "{args:?}: {lines:?}");
        let event = w.next_event().await;
        assert_rejected(&event, routing_key, reason);
        assert_eq!(event.data()["customer_payment_source_id"], args[3]);
    }
    assert_eq!(stored_sources(&w, &customer).await.len(), 2);
    assert_eq!(stored_default(&w, &customer).await, Some(valid));
    w.stop().await;
}

#[tokio::test]
async fn wallet_list_against_a_missing_database_fails_with_one_line_and_creates_nothing() {
    let name = format!("wallet_missing_{}", uuid::Uuid::new_v4().simple());
    let out = run_cli(
        &format!("{PG_BASE}/{name}"),
        &["wallet", "list", "cus_1", "--all", "--json"],
    )
    .await;
    assert!(!out.success);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let lines = human_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(&name), "{lines:?}");
    let admin = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres"))
        .await
        .expect("postgres");
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&admin)
        .await
        .expect("pg_database");
    assert_eq!(exists, 0, "wallet list created the database");
    admin.close().await;
}

/// Every operator action on the command line is in the audit log, with who did it: the
/// wallet changes (refused ones with a count of 0), a circuit reset and a key rotation.
#[tokio::test]
async fn operator_actions_on_the_command_line_are_in_the_audit_log_with_their_actor() {
    let mut w = spawn_worker().await;
    w.gateway_accepts().await;
    let customer = unique("cus");
    let a = saved(&mut w, &customer, "tok_a").await;
    let b = saved(&mut w, &customer, "tok_b").await;
    fn as_alice<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [args, &["--actor", "alice"]].concat()
    }

    let out = wallet_cli(&w, &as_alice(&["wallet", "set-default", &customer, &b])).await;
    assert!(out.success, "{}", out.stderr);
    let out = wallet_cli(&w, &as_alice(&["wallet", "remove", &customer, &a])).await;
    assert!(out.success, "{}", out.stderr);
    let out = wallet_cli(
        &w,
        &as_alice(&["wallet", "remove", &customer, "NoSuchOne1"]),
    )
    .await;
    assert!(!out.success, "refused");
    let reset = ["gateway", "reset-circuit", GATEWAY_ID, "--actor", "bob"];
    let out = wallet_cli(&w, &reset).await;
    assert!(out.success, "{}", out.stderr);
    let out = wallet_cli(&w, &["keys", "rotate", "--actor", "carol"]).await;
    assert!(out.success, "{}", out.stderr);

    let entries = wallet_worker::store::audit::latest(&w.pool, 10)
        .await
        .unwrap();
    let seen: Vec<(&str, &str, &str, i64, bool)> = entries
        .iter()
        .rev()
        .map(|e| {
            let finished = e.finished_at.is_some();
            (
                e.actor.as_str(),
                e.via.as_str(),
                e.action.as_str(),
                e.count,
                finished,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alice", "cli", "wallet.set_default", 1, true),
            ("alice", "cli", "wallet.remove", 1, true),
            ("alice", "cli", "wallet.remove", 0, true),
            ("bob", "cli", "gateway.reset_circuit", 1, true),
            ("carol", "cli", "keys.rotate", 0, true),
        ]
    );
    assert_eq!(entries[4].target["source_id"], json!(b));
    assert_eq!(entries[2].target["outcome"], json!("remove_rejected"));
    assert_eq!(entries[2].target["reason"], json!("not_found"));
    w.stop().await;
}
