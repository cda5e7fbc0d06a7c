//! Fills `<queue>.dlq`, the worker's dead-letter intake, with realistic dead letters,
//! fast, for `bench/dlq.sh`: bodies shaped like the inbound messages, the `x-wallet-*`
//! headers the worker writes (or, for one in ten, only the `x-death` a quorum queue's
//! delivery limit writes), and dead-lettered-at times one millisecond apart. It first
//! declares the worker's topology exactly as `run` does, so a worker started afterwards
//! finds a deployment with a backlog (an upgrade) and ingests it. Publishes with
//! confirms, a window of them in flight.
//!
//! ```text
//! cargo run --release --example fill_dlq -- --queue bench-dlq --exchange bench-x --count 100000
//! ```

use clap::Parser;
use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use std::collections::VecDeque;
use wallet_worker::broker::{self, Topology, headers, publish};

#[derive(Debug, Parser)]
struct Args {
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// The worker's queue; dead letters go to `<queue>.dlq`.
    #[arg(long)]
    queue: String,
    #[arg(long)]
    count: u64,
    /// The worker's exchange.
    #[arg(long)]
    exchange: String,
    /// Delete the topology's queues and the exchange instead of filling.
    #[arg(long)]
    teardown: bool,
    /// Confirms awaited at most at once.
    #[arg(long, default_value_t = 2000)]
    window: usize,
}

/// (routing key, error kind) in a realistic mix; the last is the broker's own.
const KINDS: [(&str, &str); 5] = [
    ("wallet.save", "order_not_found"),
    ("order.placed", "malformed"),
    ("order.placed", "gateway_unavailable"),
    ("wallet.attach", "internal_error"),
    ("wallet.save", "delivery_limit"),
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connection = broker::connect(&args.amqp_url, "fill-dlq").await?;
    let channel = connection.create_channel().await?;
    // The worker's default retry levels: the same queues as its `run` declares.
    let topology = Topology::new(&args.exchange, &args.queue, 1000, 600_000);
    let dlq = topology.dead_letter_queue();
    if args.teardown {
        for queue in topology.queues() {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
        let _ = channel
            .exchange_delete(args.exchange.as_str().into(), Default::default())
            .await;
        return Ok(());
    }
    topology.declare(&connection).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let start = chrono::Utc::now() - chrono::Duration::milliseconds(args.count as i64);
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::new();
    for i in 0..args.count {
        // One in ten is the broker's own; the rest take the worker's kinds in turn.
        let (key, kind) = if i % 10 == 9 {
            KINDS[4]
        } else {
            KINDS[(i % 4) as usize]
        };
        let at = start + chrono::Duration::milliseconds(i as i64);
        let id = format!("fill-{i:08}");
        let body = body(&id, key, i);
        let properties = publish::json_properties(&id, key).with_headers(headers_for(
            key,
            kind,
            at,
            &args.queue,
        ));
        let confirm = channel
            .basic_publish(
                "".into(),
                dlq.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        in_flight.push_back(confirm);
        if in_flight.len() >= args.window {
            let confirm = in_flight.pop_front().expect("window is not empty");
            publish::check(confirm.await?, &dlq)?;
        }
    }
    for confirm in in_flight {
        publish::check(confirm.await?, &dlq)?;
    }
    let _ = connection.close(200, "filled".into()).await;
    println!("published {} dead letters to {dlq}", args.count);
    Ok(())
}

fn headers_for(
    key: &str,
    kind: &str,
    at: chrono::DateTime<chrono::Utc>,
    queue: &str,
) -> FieldTable {
    let mut table = FieldTable::default();
    if kind == "delivery_limit" {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("reason".into(), headers::long_string(kind));
        death.insert("queue".into(), headers::long_string(queue));
        death.insert("exchange".into(), headers::long_string("commerce"));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![headers::long_string(key)])),
        );
        death.insert(
            "time".into(),
            AMQPValue::Timestamp(at.timestamp().try_into().unwrap_or_default()),
        );
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        return table;
    }
    let attempts = if kind == "malformed" { 1 } else { 8 };
    let millis = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (name, value) in [
        (headers::ERROR, headers::long_string(kind)),
        (
            headers::ERROR_DETAIL,
            headers::long_string(format!("{kind}: see the body")),
        ),
        (headers::ATTEMPTS, AMQPValue::LongLongInt(attempts)),
        (headers::ORIGINAL_ROUTING_KEY, headers::long_string(key)),
        (headers::DEAD_LETTERED_AT, headers::long_string(millis)),
    ] {
        table.insert(name.into(), value);
    }
    table
}

/// About 600 bytes, shaped like the message type.
fn body(id: &str, key: &str, i: u64) -> Vec<u8> {
    let data = match key {
        "wallet.save" => serde_json::json!({ "order_id": format!("ord{i:07}") }),
        "wallet.attach" => serde_json::json!({
            "order": { "id": format!("ord{i:07}"), "status": "pending",
                       "customer": { "id": format!("cus{:07}", i % 5000) } },
            "customer_payment_source_id": "QgDXpwsqDx" }),
        _ => serde_json::json!({ "order": {
            "id": format!("ord{i:07}"), "number": i.to_string(), "status": "placed",
            "customer": { "id": format!("cus{:07}", i % 5000), "email": "jane@example.com" },
            "guest": false, "currency_code": "EUR", "total_amount_cents": 12900,
            "payment_source": { "type": "external_payments", "id": "yZlPsRkQvB",
                "gateway_id": "sim", "payment_source_token": format!("tok_{i:012}"),
                "metadata": { "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030 } },
            "save_payment_source_to_customer_wallet": true } }),
    };
    let doc = serde_json::json!({
        "id": id, "type": key, "occurred_at": "2026-11-27T16:00:00Z",
        "correlation_id": format!("checkout-{i}"), "data": data,
    });
    serde_json::to_vec(&doc).expect("a JSON value serialises")
}
