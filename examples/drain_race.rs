//! The worker's side of the throughput race against the reference ceiling
//! (`bench/run.sh`, "drain" runs): pre-loads the worker's queue with valid
//! `order.placed` saves, collects the worker's events in a durable queue, and watches
//! that queue drain while the worker runs.
//!
//! ```text
//! drain_race events  --amqp-url URL --exchange X --queue EVENTS
//! drain_race preload --amqp-url URL --exchange X --n 20000 --gateway bench
//! drain_race watch   --amqp-url URL --queue EVENTS --n 20000 --pid WORKER_PID
//! ```
//!
//! `watch` polls the events queue's depth every 50 ms; throughput is the events counted
//! from the first to the N-th over that time. CPU is read from `/proc` at both ends: the
//! consumer's own (`--pid`), and that of every `beam.smp` (RabbitMQ) and every
//! `postgres` process, as the reference ceiling measures its own. It prints one JSON
//! line.

use clap::{Parser, Subcommand};
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use serde_json::json;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use wallet_worker::broker;

#[derive(Debug, Parser)]
struct Args {
    /// The broker, with the run's own vhost.
    #[arg(long)]
    amqp_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Declare a durable queue bound to `wallet.#`: it collects the worker's events.
    Events {
        #[arg(long)]
        exchange: String,
        #[arg(long)]
        queue: String,
    },
    /// Publish N `order.placed` that save a card (distinct customers and tokens).
    Preload {
        #[arg(long)]
        exchange: String,
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        /// The gateway the orders pay with (registered with `gateway set`).
        #[arg(long)]
        gateway: String,
    },
    /// Wait until the events queue holds N events; print throughput and CPU.
    Watch {
        #[arg(long)]
        queue: String,
        #[arg(long, default_value_t = 20_000)]
        n: u32,
        /// The consumer's process id.
        #[arg(long)]
        pid: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let connection = broker::connect(&args.amqp_url, "drain-race").await?;
    let channel = connection.create_channel().await?;
    match args.command {
        Command::Events { exchange, queue } => declare_events(&channel, &exchange, &queue).await?,
        Command::Preload {
            exchange,
            n,
            gateway,
        } => preload(&channel, &exchange, n, &gateway).await?,
        Command::Watch {
            queue,
            n,
            pid,
            timeout_secs,
        } => watch(&channel, &queue, n, pid, Duration::from_secs(timeout_secs)).await?,
    }
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}

async fn declare_events(channel: &Channel, exchange: &str, queue: &str) -> lapin::Result<()> {
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
        .await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "wallet.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Publishes with confirms, a window of 1,000 in flight.
async fn preload(channel: &Channel, exchange: &str, n: usize, gateway: &str) -> anyhow::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut in_flight = VecDeque::new();
    for i in 0..n {
        let id = format!("msg-{run}-{i}");
        let body = order_placed(&id, &run, i, gateway).to_string();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(id.as_str().into());
        let confirm = channel
            .basic_publish(
                exchange.into(),
                "order.placed".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await?;
        in_flight.push_back(confirm);
        if in_flight.len() >= 1000 {
            check(in_flight.pop_front().expect("one in flight").await?)?;
        }
    }
    for confirm in in_flight {
        check(confirm.await?)?;
    }
    Ok(())
}

fn check(confirmation: lapin::Confirmation) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(confirmation, lapin::Confirmation::Ack(None)),
        "the broker did not take a message: {confirmation:?}"
    );
    Ok(())
}

fn order_placed(id: &str, run: &str, i: usize, gateway: &str) -> serde_json::Value {
    json!({
        "id": id, "type": "order.placed", "occurred_at": "2026-12-01T12:00:00Z",
        "data": { "order": {
            "id": format!("ord-{run}-{i}"), "number": format!("{i}"), "status": "placed",
            "customer": { "id": format!("cus-{run}-{i}"), "email": format!("c{i}@example.com") },
            "guest": false, "currency_code": "EUR", "total_amount_cents": 1000 + i % 90_000,
            "payment_source": { "type": "external_payments", "id": format!("ps-{run}-{i}"),
                "gateway_id": gateway, "payment_source_token": format!("tok-{run}-{i}"),
                "metadata": { "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030 } },
            "save_payment_source_to_customer_wallet": true } }
    })
}

async fn watch(
    channel: &Channel,
    queue: &str,
    n: u32,
    pid: u32,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut first: Option<(Instant, Cpu)> = None;
    loop {
        let depth = depth(channel, queue).await?;
        if depth > 0 && first.is_none() {
            first = Some((Instant::now(), Cpu::now(pid)));
        }
        if depth >= n {
            let (started, cpu) = first.expect("the first event came before the N-th");
            let secs = started.elapsed().as_secs_f64();
            let per_msg = cpu.per_message_since(&Cpu::now(pid), n);
            println!(
                "{}",
                json!({ "n": n, "secs": secs, "msgs_per_s": f64::from(n) / secs,
                        "cpu_us_per_msg": per_msg })
            );
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{depth} of {n} events after {} s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    Ok(channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?
        .message_count())
}

/// CPU seconds so far: the consumer's, RabbitMQ's and Postgres's.
struct Cpu {
    consumer: f64,
    rabbitmq: f64,
    postgres: f64,
}

impl Cpu {
    fn now(pid: u32) -> Self {
        Self {
            consumer: process_seconds(pid).unwrap_or(0.0),
            rabbitmq: named_seconds("beam.smp"),
            postgres: named_seconds("postgres"),
        }
    }

    fn per_message_since(&self, end: &Cpu, n: u32) -> serde_json::Value {
        let us = |from: f64, to: f64| ((to - from) * 1e6 / f64::from(n)).round();
        json!({ "consumer": us(self.consumer, end.consumer),
                "rabbitmq": us(self.rabbitmq, end.rabbitmq),
                "postgres": us(self.postgres, end.postgres) })
    }
}

/// utime + stime of one process, in seconds.
fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) closed by ") ".
    let rest = &stat[stat.rfind(") ")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / clock_ticks())
}

/// The sum over every process whose command name is `name`.
fn named_seconds(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(process_seconds)
        .sum()
}

fn clock_ticks() -> f64 {
    // Linux reports /proc times in USER_HZ, which is 100 on every mainstream platform.
    100.0
}
