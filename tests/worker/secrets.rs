//! Secrets (docs/interface.md, secrets): tokens and secrets never reach logs, errors, metrics, dead-letter headers,
//! the read API or CLI output. One scenario touches every path a secret travels, then
//! every sink is scanned for every secret value.

use crate::helpers::*;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;
use wallet_worker::domain::{RawMessage, parse};
use wallet_worker::store;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, ResponseTemplate};

/// Header values as text, nested tables included (`Debug` would print bytes).
fn render(table: &FieldTable) -> String {
    let value = |v: &AMQPValue| match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::FieldTable(t) => render(t),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        other => format!("{other:?}"),
    };
    table
        .inner()
        .iter()
        .map(|(k, v)| format!("{k}={}\n", value(v)))
        .collect()
}

/// Every `(sink, secret)` pair where the secret's value shows up in the sink's text.
fn leaks(sinks: &[(String, String)], secrets: &[(&str, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (sink, text) in sinks {
        for (name, secret) in secrets {
            if text.contains(secret.as_str()) {
                hits.push(format!("{name} in {sink}"));
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_secret_reaches_logs_cli_output_metrics_or_dead_letter_headers() {
    let mut w = spawn_worker().await;
    let customer = unique("cus");
    let [saved, refused, flaky, malformed] =
        ["save", "refused", "flaky", "malformed"].map(|k| unique(&format!("tok_secret_{k}")));
    // A refusal and a 503 that echo the token and the gateway secret back, as a careless
    // gateway might; then the signing gateway for everything else.
    let echo = json!({ "success": false, "data": { "error": {
        "code": format!("declined_{refused}"), "message": format!("card {refused} declined ({GATEWAY_SECRET})") } } });
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains(refused.as_str()))
        .respond_with(ResponseTemplate::new(422).set_body_json(echo))
        .mount(&w.gateway)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .and(body_string_contains(flaky.as_str()))
        .respond_with(ResponseTemplate::new(503).set_body_string(format!("busy with {flaky}")))
        .up_to_n_times(1)
        .mount(&w.gateway)
        .await;
    w.gateway_accepts().await;

    // Save, attach (its event carries the tokens, as it must), refuse, 503-then-OK.
    let save = order_placed(&unique("ord"), &customer, &saved, true);
    w.publish("order.placed", &save).await;
    let event = w.event_caused_by(save["id"].as_str().unwrap()).await;
    assert_eq!(event.routing_key, "wallet.saved");
    let source_id = event.data()["customer_payment_source"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let attach = wallet_attach(&unique("ord"), "pending", &customer, &source_id);
    w.publish("wallet.attach", &attach).await;
    let attached = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(
        attached.data()["payment_source"]["payment_source_token"],
        source_token_for(&saved)
    );
    let msg = order_placed(&unique("ord"), &customer, &refused, true);
    w.publish("order.placed", &msg).await;
    let failed = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(failed.data()["reason"], "gateway_refused");
    let msg = order_placed(&unique("ord"), &customer, &flaky, true);
    w.publish("order.placed", &msg).await;
    assert_eq!(
        w.event_caused_by(msg["id"].as_str().unwrap())
            .await
            .routing_key,
        "wallet.saved"
    );

    // Malformed: the token in a mistyped field (with an escaped quote), and as a
    // metadata key whose value does not parse.
    let mut mistyped = order_placed(&unique("ord"), &customer, &malformed, true);
    mistyped["data"]["order"]["guest"] = json!(format!("{malformed}\"{malformed}"));
    let mut keyed = order_placed(&unique("ord"), &customer, &malformed, true);
    keyed["data"]["order"]["payment_source"]["metadata"] = json!({ malformed.as_str(): 1 });
    let keyed_body = serde_json::to_string(&keyed)
        .unwrap()
        .replace(":1}", ":1e999}");
    let properties = || {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
    };
    w.publish_raw(
        "order.placed",
        &serde_json::to_vec(&mistyped).unwrap(),
        properties(),
    )
    .await;
    w.publish_raw("order.placed", keyed_body.as_bytes(), properties())
        .await;
    let mut sinks = Vec::new();
    for n in 0..2 {
        let dead = w.next_dead_letter().await;
        let headers = dead.properties.headers().clone().unwrap_or_default();
        let headers = render(&headers);
        assert!(headers.contains("x-wallet-error=malformed"), "{headers}");
        sinks.push((format!("dead letter {n} headers"), headers));
    }

    // The read API, right and wrong token; metrics.
    let path = format!("/v1/customers/{customer}/customer_payment_sources");
    let (status, api) = w
        .admin_get(&path, Some(&format!("Bearer {ADMIN_TOKEN}")))
        .await;
    assert_eq!(status, 200);
    assert!(api.contains(&source_id));
    let (status, denied) = w.admin_get(&path, Some("Bearer wrong")).await;
    assert_eq!(status, 401);
    let (_, metrics) = w.admin_get("/metrics", None).await;
    assert!(metrics.contains("wallet_messages_total"));

    // The CLI, as the real binary with everything logged.
    let db = w.args.db.database_url.clone();
    let mut cli = Vec::new();
    let secret_env = [("WALLET_GATEWAY_SECRET", GATEWAY_SECRET)];
    for args in [
        vec!["wallet", "list", customer.as_str(), "--json"],
        vec!["wallet", "list", customer.as_str()],
        vec!["gateway", "list", "--json"],
        vec!["gateway", "list"],
        vec![
            "gateway",
            "set",
            "scan-gw",
            "--token-url",
            "http://example.com/token",
        ],
        vec![
            "gateway",
            "set",
            "scan-gw",
            "--token-url",
            "http://127.0.0.1:1/token",
        ],
    ] {
        let out = run_cli_with(&db, &secret_env, &args).await;
        cli.push((args.join(" "), format!("{}\n{}", out.stdout, out.stderr)));
    }
    assert!(
        cli[0].1.contains(&source_id),
        "wallet list shows the source: {}",
        cli[0].1
    );
    assert!(cli[2].1.contains(GATEWAY_ID));

    // What `?value` in any log line would print: the worker's values that hold secrets.
    let body = serde_json::to_vec(&save).unwrap();
    let raw = RawMessage {
        body: &body,
        routing_key: "order.placed",
        message_id: None,
    };
    let debugged = format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        w.args,
        parse(raw).expect("the save parses"),
        store::gateways::find(&w.pool, &w.keys, GATEWAY_ID)
            .await
            .expect("gateway"),
        store::wallet::find_owned(&w.pool, &source_id, &customer)
            .await
            .expect("source"),
    );
    assert!(debugged.contains(&source_id) && debugged.contains(GATEWAY_ID));
    sinks.push(("Debug of values holding secrets".to_owned(), debugged));

    let logs = captured_logs();
    assert!(
        logs.contains("malformed message") && logs.contains("gateway call failed"),
        "logs were captured"
    );
    sinks.extend([
        ("logs".to_owned(), logs),
        ("read API (authorized)".to_owned(), api),
        ("read API (denied)".to_owned(), denied),
        ("/metrics".to_owned(), metrics),
        (
            "wallet.save_failed event".to_owned(),
            failed.body.to_string(),
        ),
    ]);
    sinks.extend(
        cli.into_iter()
            .map(|(args, text)| (format!("`{args}`"), text)),
    );
    let secrets = [
        ("saved payment_source_token", saved.clone()),
        ("refused payment_source_token", refused),
        ("503 payment_source_token", flaky.clone()),
        ("malformed payment_source_token", malformed),
        ("customer_token", customer_token_for(&customer)),
        ("stored payment_source_token", source_token_for(&saved)),
        (
            "stored payment_source_token (after 503)",
            source_token_for(&flaky),
        ),
        ("gateway secret", GATEWAY_SECRET.to_owned()),
        ("admin token", ADMIN_TOKEN.to_owned()),
    ];
    let hits = leaks(&sinks, &secrets);
    assert!(hits.is_empty(), "secrets leaked: {hits:#?}");
    w.stop().await;
}

/// A token is a token whatever its JSON type: secret fields holding numbers, objects
/// and arrays, in the payment source and in metadata (the order's and the gateway's),
/// reach no log line, no event but `wallet.attached`, no dead-letter header, no CLI
/// listing and no read API answer.
#[tokio::test]
async fn secret_fields_of_every_json_type_reach_no_output() {
    let mut w = spawn_worker().await;
    let answer = json!({ "success": true, "data": {
        "customer_token": "cus_tok_typed", "payment_source_token": "pst_tok_typed",
        "metadata": { "network_token": "nt_secret_9999", "client_secret": 123456789012u64, "funding": "credit" } } });
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&w.gateway)
        .await;
    let customer = unique("cus");
    let mut outputs = Vec::new();
    // The payment source token as a number, an object and an array: malformed, and
    // the rejection names the field and what was expected, never the value.
    for value in [
        json!(4242424242424242u64),
        json!({ "pan": "tok_obj_secret_1" }),
        json!(["tok_arr_secret_2"]),
    ] {
        let mut msg = order_placed(&unique("ord"), &customer, "unused", true);
        msg["data"]["order"]["payment_source"]["payment_source_token"] = value;
        w.publish_unchecked("order.placed", &msg).await;
        let dead = w.dead_lettered_event(msg["id"].as_str()).await;
        assert_eq!(dead.data()["error"], "malformed");
        assert!(
            dead.data()["detail"]
                .as_str()
                .unwrap()
                .starts_with("data.order.payment_source.payment_source_token: invalid type: "),
            "{}",
            dead.data()
        );
        outputs.push(("wallet.dead_lettered".to_owned(), dead.body.to_string()));
        let letter = w.next_dead_letter().await;
        let headers = render(&letter.properties.headers().clone().unwrap_or_default());
        outputs.push(("dead-letter headers".to_owned(), headers));
    }
    // Secret fields of every type inside the order's metadata.
    let mut msg = order_placed(&unique("ord"), &customer, "tok_typed", true);
    msg["data"]["order"]["payment_source"]["metadata"] = json!({
        "brand": "visa", "last4": "4242", "card_token": 5555444433332222u64,
        "secret": { "k": "sec_obj_secret_3" }, "nested": { "api_token": ["tok_arr_secret_4"] } });
    w.publish("order.placed", &msg).await;
    let saved = w.event_caused_by(msg["id"].as_str().unwrap()).await;
    assert_eq!(saved.routing_key, "wallet.saved");
    let source = saved.data()["customer_payment_source"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        saved.data()["customer_payment_source"]["metadata"]["funding"],
        "credit"
    );
    outputs.push(("wallet.saved".to_owned(), saved.body.to_string()));
    let attach = wallet_attach(&unique("ord"), "pending", &customer, &source);
    w.publish("wallet.attach", &attach).await;
    let attached = w.event_caused_by(attach["id"].as_str().unwrap()).await;
    assert_eq!(
        attached.data()["payment_source"]["payment_source_token"],
        "pst_tok_typed"
    );
    // Only the two tokens it exists to carry: nothing from the metadata.
    outputs.push((
        "wallet.attached metadata".to_owned(),
        attached.data()["payment_source"]["metadata"].to_string(),
    ));

    let db = w.args.db.database_url.clone();
    for args in [
        vec!["wallet", "list", customer.as_str(), "--json"],
        vec!["wallet", "list", customer.as_str(), "--all"],
        vec!["gateway", "list", "--json"],
    ] {
        let out = run_cli(&db, &args).await;
        assert!(out.success, "{}", out.stderr);
        outputs.push((args.join(" "), format!("{}{}", out.stdout, out.stderr)));
    }
    let listing = format!("/v1/customers/{customer}/customer_payment_sources?all=true");
    let (status, api) = w
        .admin_get(&listing, Some(&format!("Bearer {ADMIN_TOKEN}")))
        .await;
    assert!(status == 200 && api.contains(&source), "{api}");
    outputs.push(("read API".to_owned(), api));
    outputs.push(("logs".to_owned(), captured_logs()));
    let secrets: Vec<(&str, String)> = [
        "4242424242424242",
        "tok_obj_secret_1",
        "tok_arr_secret_2",
        "5555444433332222",
        "sec_obj_secret_3",
        "tok_arr_secret_4",
        "nt_secret_9999",
        "123456789012",
    ]
    .into_iter()
    .map(|s| (s, s.to_owned()))
    .collect();
    let hits = leaks(&outputs, &secrets);
    assert!(hits.is_empty(), "secrets leaked: {hits:#?}");
    w.stop().await;
}
