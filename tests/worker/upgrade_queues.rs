//! `upgrade-queues` (docs/operations.md, upgrading the queues): a deployment with the
//! topology of the classic-queue workers — a backlog in the work queue, messages parked
//! in classic retry queues, dead letters in a classic `.dlq` — is moved onto the quorum
//! topology while a publisher keeps publishing, and then every message has exactly one
//! effect and every dead letter is in the quorum `.dlq`, byte for byte.

use crate::helpers::*;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wallet_worker::config::WorkerArgs;

/// One retry level, long enough that parked messages are still parked at the upgrade.
const LEVEL_MS: u64 = 120_000;

#[tokio::test]
async fn upgrading_classic_queues_keeps_every_message_and_dead_letter_while_publishers_publish() {
    let mut args = test_args();
    (args.retry_base_ms, args.retry_max_ms) = (LEVEL_MS, LEVEL_MS);
    let connection = wallet_worker::broker::connect(AMQP_URL, "test-upgrade")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    declare_old_topology(&channel, &args).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            publish(
                &channel,
                &args.amqp.exchange,
                "order.placed",
                &order("backlog", i),
                None,
            )
            .await,
        );
    }
    let retry_queue = format!("{}.retry.{LEVEL_MS}", args.amqp.queue);
    for i in 0..20 {
        let headers = [
            ("x-wallet-attempts", AMQPValue::LongLongInt(1)),
            (
                "x-wallet-original-routing-key",
                AMQPValue::LongString("order.placed".into()),
            ),
        ];
        let parked = Some((&headers[..], "100000"));
        ids.push(publish(&channel, "", &retry_queue, &order("parked", i), parked).await);
    }
    let dead_letters = fill_dead_letters(&channel, &args).await;

    let stop = CancellationToken::new();
    let publisher = tokio::spawn(keep_publishing(channel.clone(), args.clone(), stop.clone()));
    let env = [
        ("AMQP_URL", AMQP_URL),
        ("WALLET_EXCHANGE", args.amqp.exchange.as_str()),
        ("WALLET_QUEUE", args.amqp.queue.as_str()),
        ("WALLET_RETRY_BASE_MS", "120000"),
        ("WALLET_RETRY_MAX_MS", "120000"),
    ];
    let upgraded = run_cli_with(&args.db.database_url, &env, &["upgrade-queues"]).await;
    stop.cancel();
    ids.extend(publisher.await.expect("publisher"));
    assert!(upgraded.success, "{}", upgraded.stderr);
    assert!(
        upgraded.stdout.contains("are current"),
        "{}",
        upgraded.stdout
    );

    assert_dead_letters_moved(&channel, &args, &dead_letters).await;
    let w = spawn_worker_with(args).await;
    let effects = format!(
        "SELECT count(*) FROM processed_messages WHERE message_id = ANY(ARRAY['{}'])",
        ids.join("','")
    );
    w.wait_for_count(&effects, ids.len() as i64).await;
    assert_eq!(
        w.count("SELECT count(*) FROM orders").await,
        ids.len() as i64,
        "one order per message"
    );
    assert_eq!(
        w.count("SELECT count(*) FROM processed_messages").await,
        ids.len() as i64
    );
    println!(
        "[upgrade] messages={} (30 backlog, 20 parked, {} published during the upgrade) dead_letters={} {}",
        ids.len(),
        ids.len() - 50,
        dead_letters.len(),
        upgraded.stdout.trim()
    );
    let _ = connection.close(200, "done".into()).await;
    w.stop().await;
}

/// The queues as the classic-queue workers declared them, argument for argument.
async fn declare_old_topology(channel: &Channel, args: &WorkerArgs) {
    let (exchange, queue) = (args.amqp.exchange.as_str(), args.amqp.queue.as_str());
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let dlq = format!("{queue}.dlq");
    let mut work = FieldTable::default();
    work.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    work.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(50));
    work.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    work.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(dlq.as_str().into()),
    );
    declare(channel, queue, work).await;
    for key in [
        "order.placed",
        "wallet.save",
        "wallet.attach",
        "wallet.remove",
        "wallet.set_default",
    ] {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
    declare(channel, &dlq, FieldTable::default()).await;
    let mut retry = FieldTable::default();
    retry.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(LEVEL_MS as i64),
    );
    retry.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    retry.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
    declare(channel, &format!("{queue}.retry.{LEVEL_MS}"), retry).await;
}

async fn declare(channel: &Channel, name: &str, args: FieldTable) {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(name.into(), durable, args)
        .await
        .unwrap_or_else(|err| panic!("declare {name}: {err}"));
}

/// An order.placed that records an order and saves nothing (no gateway involved).
fn order(tag: &str, i: usize) -> Value {
    order_placed(
        &format!("ord_{tag}_{i}"),
        &format!("cus_{tag}"),
        &format!("tok_{tag}_{i}"),
        false,
    )
}

/// Publishes `message` with a confirm; returns its id.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message: &Value,
    parked: Option<(&[(&str, AMQPValue)], &str)>,
) -> String {
    let id = message["id"].as_str().expect("id").to_owned();
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.as_str().into());
    if let Some((headers, expiration)) = parked {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert((*name).into(), value.clone());
        }
        properties = properties
            .with_headers(table)
            .with_expiration(expiration.into());
    }
    let body = serde_json::to_vec(message).expect("json");
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            properties,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    id
}

/// Dead letters as the worker made them and as the broker made them (`x-death` only).
async fn fill_dead_letters(channel: &Channel, args: &WorkerArgs) -> Vec<(Vec<u8>, FieldTable)> {
    let dlq = format!("{}.dlq", args.amqp.queue);
    let mut sent = Vec::new();
    for i in 0..10 {
        let mut headers = FieldTable::default();
        if i % 2 == 0 {
            headers.insert(
                "x-wallet-error".into(),
                AMQPValue::LongString("malformed".into()),
            );
            headers.insert("x-wallet-attempts".into(), AMQPValue::LongLongInt(1));
        } else {
            let mut death = FieldTable::default();
            death.insert(
                "reason".into(),
                AMQPValue::LongString("delivery_limit".into()),
            );
            death.insert(
                "queue".into(),
                AMQPValue::LongString(args.amqp.queue.as_str().into()),
            );
            headers.insert(
                "x-death".into(),
                AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
            );
        }
        let body = format!("{{\"not\": \"json\" {i}").into_bytes();
        let properties = BasicProperties::default().with_headers(headers.clone());
        channel
            .basic_publish(
                "".into(),
                dlq.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        sent.push((body, headers));
    }
    sent
}

/// Publishes order.placed messages until `stop`; returns the confirmed ids.
async fn keep_publishing(
    channel: Channel,
    args: WorkerArgs,
    stop: CancellationToken,
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut i = 0;
    while !stop.is_cancelled() {
        ids.push(
            publish(
                &channel,
                &args.amqp.exchange,
                "order.placed",
                &order("during", i),
                None,
            )
            .await,
        );
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    ids
}

/// The `.dlq` is a quorum queue now, and holds every dead letter as it was.
async fn assert_dead_letters_moved(
    channel: &Channel,
    args: &WorkerArgs,
    sent: &[(Vec<u8>, FieldTable)],
) {
    let topology = wallet_worker::broker::Topology::new(
        &args.amqp.exchange,
        &args.amqp.queue,
        args.retry_base_ms,
        args.retry_max_ms,
    );
    let dlq = topology.dead_letter_queue();
    let mut quorum = FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    declare(channel, &dlq, quorum).await;
    let mut got = Vec::new();
    while let Some(message) = channel
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        let mut headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default()
            .inner()
            .clone();
        // Added by the quorum queue to this very read (RabbitMQ 3.10 sets it on every
        // `basic.get`, 0 on a first delivery): not part of the stored message.
        headers.remove("x-delivery-count");
        let headers = FieldTable::from(headers);
        got.push((message.delivery.data.clone(), headers));
    }
    assert_eq!(
        got.len(),
        sent.len(),
        "every dead letter is in the quorum .dlq"
    );
    for (body, headers) in sent {
        assert!(
            got.iter().any(|(b, h)| b == body && h == headers),
            "dead letter {} kept its bytes and headers",
            String::from_utf8_lossy(body)
        );
    }
}
