//! The naive ceiling: the simplest consumer that does the worker's job, used by
//! `bench/run.sh` as the baseline the real worker is measured against.
//!
//! Per delivery, in its own tokio task (at most `--prefetch` at once):
//! parse → for a save, one signed POST to the token_url → one Postgres transaction
//! (inbox row, result row(s), outbox row) → one confirmed publish of the completion
//! event → one ack. No group commit, no relay, no delayed retries: a failure requeues.
//!
//! It declares the worker's topology ([`Topology`]) for the queue it is given, so
//! `wallet-worker loadgen` traffic reaches it, and keeps its own tables (`naive_*`).
//!
//! ```text
//! cargo run --release --example naive_ceiling -- --queue naive --exchange bench \
//!     --token-url http://127.0.0.1:8099/token --secret sim-secret
//! cargo run --release --example naive_ceiling -- --queue naive --exchange bench --teardown
//! ```

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, message::Delivery};
use serde_json::{Map, Value};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use std::sync::Arc;
use std::time::Duration;
use wallet_worker::broker::{self, Topology, publish};
use wallet_worker::domain::events::{self as ev, OutboundEvent, SaveFailure};
use wallet_worker::domain::{self, Command, Meta, Order, PaymentSource, RawMessage, Secret};
use wallet_worker::gateway::{SaveRequest, sign};

/// The worker's allocator: the race compares designs, not allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The worker's default retry bounds: the same topology (and so the same queue names
/// to tear down) as `wallet-worker run` with default settings.
const RETRY_BASE_MS: u64 = 1000;
const RETRY_MAX_MS: u64 = 600_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS naive_inbox (
    message_id text PRIMARY KEY, message_type text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS naive_orders (
    id text PRIMARY KEY, customer_id text, envelope bytea NOT NULL);
CREATE TABLE IF NOT EXISTS naive_sources (
    id text PRIMARY KEY, customer_id text NOT NULL, gateway_id text NOT NULL,
    name text NOT NULL, metadata jsonb NOT NULL, customer_token text NOT NULL,
    payment_source_token text NOT NULL,
    UNIQUE (customer_id, gateway_id, payment_source_token));
CREATE TABLE IF NOT EXISTS naive_attachments (
    order_id text PRIMARY KEY, customer_payment_source_id text NOT NULL);
CREATE TABLE IF NOT EXISTS naive_outbox (
    seq bigserial PRIMARY KEY, event_id text NOT NULL, routing_key text NOT NULL,
    body bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
";

/// Naive baseline consumer for the benchmark.
#[derive(Debug, Parser)]
struct Args {
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// Created when missing; the `naive_*` tables are created at start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/naive_ceiling"
    )]
    database_url: String,
    #[arg(long, env = "WALLET_EXCHANGE", default_value = "commerce")]
    exchange: String,
    #[arg(long, env = "WALLET_QUEUE", default_value = "naive-ceiling")]
    queue: String,
    /// Deliveries in flight, each handled by its own task.
    #[arg(long, env = "WALLET_PREFETCH", default_value_t = 64)]
    prefetch: u16,
    /// The one gateway this consumer knows (loadgen's `--gateway-id`).
    #[arg(long, default_value = "sim")]
    gateway_id: String,
    #[arg(
        long,
        env = "NAIVE_TOKEN_URL",
        default_value = "http://127.0.0.1:8099/token"
    )]
    token_url: String,
    #[arg(long, env = "NAIVE_GATEWAY_SECRET", default_value = "sim-secret")]
    secret: Secret,
    /// Delete the queue (with its dead-letter and retry queues) and the exchange, then exit.
    #[arg(long)]
    teardown: bool,
}

/// What every delivery task shares.
struct App {
    pool: PgPool,
    http: reqwest::Client,
    /// One confirm-mode channel shared by all tasks; each awaits its own confirm.
    publish: Channel,
    exchange: String,
    gateway_id: String,
    token_url: String,
    secret: Secret,
}

/// What the gateway step decided for a save.
enum Saving {
    Tokens {
        customer_token: String,
        payment_source_token: String,
        metadata: Map<String, Value>,
    },
    Failed(SaveFailure, String),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let topology = Topology::new(&args.exchange, &args.queue, RETRY_BASE_MS, RETRY_MAX_MS);
    let connection = broker::connect(&args.amqp_url, "naive-ceiling")
        .await
        .context("cannot reach the broker")?;
    if args.teardown {
        return teardown(&connection, &topology).await;
    }
    topology.declare(&connection).await?;
    let pool = database(&args.database_url, args.prefetch).await?;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::from(args.prefetch))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let app = Arc::new(App {
        pool,
        http,
        publish,
        exchange: args.exchange,
        gateway_id: args.gateway_id,
        token_url: args.token_url,
        secret: args.secret,
    });
    consume(&connection, app, &topology.queue, args.prefetch).await
}

/// The same pool size as the worker (`prefetch` clamped to 8..=32, plus 2).
async fn database(url: &str, prefetch: u16) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(url).await? {
        Postgres::create_database(url).await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(u32::from(prefetch).clamp(8, 32) + 2)
        .acquire_timeout(Duration::from_secs(30))
        // The worker's connection rules (no TLS on loopback unless asked): a fair race.
        .connect_with(wallet_worker::store::connect_options(url)?)
        .await
        .context("cannot reach Postgres")?;
    sqlx::raw_sql(SCHEMA).execute(&pool).await?;
    Ok(pool)
}

async fn consume(
    connection: &Connection,
    app: Arc<App>,
    queue: &str,
    prefetch: u16,
) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // The runner waits for this line before it publishes.
    println!("naive-ceiling consuming {queue} with prefetch {prefetch}");
    let stop = wallet_worker::worker::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    let app = app.clone();
                    tokio::spawn(async move { settle(&app, delivery).await });
                }
                Some(Err(err)) => bail!("consumer failed: {err}"),
                None => return Ok(()),
            },
            _ = &mut stop => return Ok(()),
        }
    }
}

/// Handles one delivery and acks it, or requeues it after a pause when anything failed.
async fn settle(app: &App, delivery: Delivery) {
    let settled = match handle(app, &delivery).await {
        Ok(true) => delivery.ack(BasicAckOptions::default()).await,
        Ok(false) => delivery.reject(BasicRejectOptions { requeue: false }).await,
        Err(err) => {
            eprintln!("naive-ceiling: requeueing a message: {err:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            delivery.nack(requeue).await
        }
    };
    if let Err(err) = settled {
        eprintln!("naive-ceiling: cannot settle a delivery: {err}");
    }
}

/// Ok(false) for a malformed message; Ok(true) once its event (if any) is confirmed.
async fn handle(app: &App, delivery: &Delivery) -> anyhow::Result<bool> {
    let raw = RawMessage {
        body: &delivery.data,
        routing_key: delivery.routing_key.as_str(),
        message_id: delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
    };
    let Ok(inbound) = domain::parse(raw) else {
        return Ok(false);
    };
    let meta = &inbound.meta;
    let event = match &inbound.command {
        Command::OrderPlaced(cmd) => order_placed(app, meta, &delivery.data, &cmd.order).await?,
        Command::WalletSave(cmd) => {
            let order = placed_order(&app.pool, &cmd.order_id).await?;
            let saving = call_gateway(app, &order).await?;
            let mut tx = app.pool.begin().await?;
            if !claim(&mut tx, meta).await? {
                return Ok(true);
            }
            let event = store_save(&mut tx, meta, &order, saving).await?;
            commit(tx, Some(event)).await?
        }
        Command::WalletAttach(cmd) => attach(app, meta, cmd).await?,
        Command::WalletRemove(cmd) => remove(app, meta, cmd).await?,
        Command::WalletSetDefault(cmd) => set_default(app, meta, cmd).await?,
    };
    if let Some(event) = event {
        publish_confirmed(app, &event).await?;
    }
    Ok(true)
}

async fn order_placed(
    app: &App,
    meta: &Meta,
    envelope: &[u8],
    order: &Order,
) -> anyhow::Result<Option<OutboundEvent>> {
    let saving = if order.save_to_wallet {
        Some(call_gateway(app, order).await?)
    } else {
        None
    };
    let mut tx = app.pool.begin().await?;
    if !claim(&mut tx, meta).await? {
        return Ok(None);
    }
    sqlx::query(
        "INSERT INTO naive_orders (id, customer_id, envelope) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&order.id)
    .bind(order.customer.as_ref().map(|c| &c.id))
    .bind(envelope)
    .execute(&mut *tx)
    .await?;
    let event = match saving {
        Some(saving) => Some(store_save(&mut tx, meta, order, saving).await?),
        None => None,
    };
    commit(tx, event).await
}

/// The order of a `wallet.save`, parsed again from the `order.placed` stored for it.
async fn placed_order(pool: &PgPool, order_id: &str) -> anyhow::Result<Order> {
    let row = sqlx::query("SELECT envelope FROM naive_orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        bail!("order {order_id} not placed yet");
    };
    let envelope: Vec<u8> = row.try_get("envelope")?;
    let raw = RawMessage {
        body: &envelope,
        routing_key: "order.placed",
        message_id: None,
    };
    match domain::parse(raw)?.command {
        Command::OrderPlaced(placed) => Ok(placed.order),
        _ => bail!("order {order_id} is stored as another message type"),
    }
}

/// Refusals decided locally, else one signed POST (docs/interface.md, the token_url call). A transient answer is
/// an error: the message is requeued.
async fn call_gateway(app: &App, order: &Order) -> anyhow::Result<Saving> {
    let failed = |reason, message: &str| Ok(Saving::Failed(reason, message.to_owned()));
    let Some(customer) = &order.customer else {
        return failed(SaveFailure::GuestCustomer, "guest orders cannot save");
    };
    let Some(PaymentSource::External(payment)) = &order.payment_source else {
        return failed(
            SaveFailure::UnsupportedPaymentSource,
            "not external_payments",
        );
    };
    if payment.gateway_id.as_str() != app.gateway_id {
        return failed(SaveFailure::UnknownGateway, "no such gateway");
    }
    let request = SaveRequest {
        order,
        customer,
        payment,
    };
    let body = request.body();
    let response = app
        .http
        .post(&app.token_url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", request.idempotency_key())
        .header("X-CommerceLayer-Signature", sign(&body, &app.secret))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        bail!("gateway answered {status}");
    }
    let answer: Value = response.json().await?;
    let data = &answer["data"];
    if answer["success"] != true {
        let code = data["error"]["code"].as_str().unwrap_or("refused");
        return failed(SaveFailure::GatewayRefused, code);
    }
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    let mut metadata = payment.metadata.clone();
    if let Some(more) = data["metadata"].as_object() {
        metadata.extend(more.clone());
    }
    Ok(Saving::Tokens {
        customer_token: text("customer_token"),
        payment_source_token: text("payment_source_token"),
        metadata,
    })
}

/// Stores the source (or finds it) and returns `wallet.saved`, or `wallet.save_failed`.
async fn store_save(
    tx: &mut sqlx::PgConnection,
    meta: &Meta,
    order: &Order,
    saving: Saving,
) -> anyhow::Result<OutboundEvent> {
    let customer_id = order.customer.as_ref().map(|c| c.id.clone());
    let (customer_token, payment_source_token, metadata) = match saving {
        Saving::Failed(reason, message) => {
            let data = ev::WalletSaveFailed {
                order_id: order.id.clone(),
                customer_id,
                reason,
                message,
            };
            return Ok(ev::outbound(meta, data));
        }
        Saving::Tokens {
            customer_token,
            payment_source_token,
            metadata,
        } => (customer_token, payment_source_token, metadata),
    };
    let row = sqlx::query(
        "INSERT INTO naive_sources (id, customer_id, gateway_id, name, metadata,
             customer_token, payment_source_token) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (customer_id, gateway_id, payment_source_token)
             DO UPDATE SET name = naive_sources.name
         RETURNING id, name, metadata, (xmax = 0) AS created",
    )
    .bind(domain::ids::customer_payment_source_id())
    .bind(&customer_id)
    .bind(order_gateway(order))
    .bind(source_name(&metadata))
    .bind(Json(&metadata))
    .bind(&customer_token)
    .bind(&payment_source_token)
    .fetch_one(&mut *tx)
    .await?;
    let stored: Json<Map<String, Value>> = row.try_get("metadata")?;
    let data = ev::WalletSaved {
        order_id: order.id.clone(),
        customer_id: customer_id.unwrap_or_else(|| domain::ids::CustomerId::stored(String::new())),
        customer_payment_source: ev::SourceSummary {
            id: row.try_get("id")?,
            gateway_id: order_gateway(order),
            name: row.try_get("name")?,
            metadata: stored.0,
            // The ceiling keeps no default source (the benchmark only reads throughput).
            default: false,
        },
        created: row.try_get("created")?,
    };
    Ok(ev::outbound(meta, data))
}

async fn attach(
    app: &App,
    meta: &Meta,
    cmd: &domain::WalletAttach,
) -> anyhow::Result<Option<OutboundEvent>> {
    let rejected = |reason| {
        let data = ev::WalletAttachRejected {
            order_id: cmd.order_id.clone(),
            customer_payment_source_id: cmd.customer_payment_source_id.clone(),
            reason,
        };
        Some(ev::outbound(meta, data))
    };
    let mut tx = app.pool.begin().await?;
    if !claim(&mut tx, meta).await? {
        return Ok(None);
    }
    if !cmd.order_status.is_editable() {
        return commit(tx, rejected(ev::AttachRejection::OrderNotEditable)).await;
    }
    // Finds the customer's own source and records the attachment in one statement.
    let row = sqlx::query(
        "WITH source AS (SELECT * FROM naive_sources WHERE id = $2 AND customer_id = $3),
              attached AS (INSERT INTO naive_attachments SELECT $1, id FROM source
                  ON CONFLICT (order_id) DO UPDATE
                  SET customer_payment_source_id = EXCLUDED.customer_payment_source_id)
         SELECT gateway_id, metadata, customer_token, payment_source_token FROM source",
    )
    .bind(&cmd.order_id)
    .bind(&cmd.customer_payment_source_id)
    .bind(&cmd.customer_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return commit(tx, rejected(ev::AttachRejection::NotFound)).await;
    };
    let metadata: Json<Map<String, Value>> = row.try_get("metadata")?;
    let data = ev::WalletAttached {
        order_id: cmd.order_id.clone(),
        customer_id: cmd.customer_id.clone(),
        customer_payment_source_id: cmd.customer_payment_source_id.clone(),
        payment_source: ev::AttachedPaymentSource {
            kind: "external_payments",
            gateway_id: row.try_get("gateway_id")?,
            customer_token: Secret::new(row.try_get::<String, _>("customer_token")?),
            payment_source_token: Secret::new(row.try_get::<String, _>("payment_source_token")?),
            metadata: metadata.0,
        },
    };
    commit(tx, Some(ev::outbound(meta, data))).await
}

/// `wallet.remove`: one statement. The ceiling keeps no default, so none is reported.
async fn remove(
    app: &App,
    meta: &Meta,
    cmd: &domain::SourceRef,
) -> anyhow::Result<Option<OutboundEvent>> {
    let mut tx = app.pool.begin().await?;
    if !claim(&mut tx, meta).await? {
        return Ok(None);
    }
    let removed = sqlx::query("DELETE FROM naive_sources WHERE id = $1 AND customer_id = $2")
        .bind(&cmd.customer_payment_source_id)
        .bind(&cmd.customer_id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    let event = if removed {
        let data = ev::WalletRemoved {
            customer_id: cmd.customer_id.clone(),
            customer_payment_source_id: cmd.customer_payment_source_id.clone(),
            default_customer_payment_source_id: None,
        };
        ev::outbound(meta, data)
    } else {
        ev::outbound(meta, change_rejected(ev::WalletChange::Remove, cmd))
    };
    commit(tx, Some(event)).await
}

/// `wallet.set_default`: checks the source is the customer's (no default is kept).
async fn set_default(
    app: &App,
    meta: &Meta,
    cmd: &domain::SourceRef,
) -> anyhow::Result<Option<OutboundEvent>> {
    let mut tx = app.pool.begin().await?;
    if !claim(&mut tx, meta).await? {
        return Ok(None);
    }
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM naive_sources WHERE id = $1 AND customer_id = $2")
            .bind(&cmd.customer_payment_source_id)
            .bind(&cmd.customer_id)
            .fetch_optional(&mut *tx)
            .await?;
    let event = match found {
        Some(_) => {
            let data = ev::WalletDefaultSet {
                customer_id: cmd.customer_id.clone(),
                customer_payment_source_id: cmd.customer_payment_source_id.clone(),
            };
            ev::outbound(meta, data)
        }
        None => ev::outbound(meta, change_rejected(ev::WalletChange::SetDefault, cmd)),
    };
    commit(tx, Some(event)).await
}

fn change_rejected(change: ev::WalletChange, cmd: &domain::SourceRef) -> ev::WalletChangeRejected {
    ev::WalletChangeRejected {
        change,
        customer_id: cmd.customer_id.clone(),
        customer_payment_source_id: cmd.customer_payment_source_id.clone(),
        reason: ev::WalletRejection::NotFound,
    }
}

/// The inbox row; false when the message was processed before (the transaction is
/// then dropped, which rolls it back).
async fn claim(tx: &mut sqlx::PgConnection, meta: &Meta) -> anyhow::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO naive_inbox (message_id, message_type) VALUES ($1, $2)
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&meta.id)
    .bind(meta.kind.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The outbox row, then COMMIT.
async fn commit(
    mut tx: sqlx::Transaction<'_, Postgres>,
    event: Option<OutboundEvent>,
) -> anyhow::Result<Option<OutboundEvent>> {
    if let Some(event) = &event {
        sqlx::query("INSERT INTO naive_outbox (event_id, routing_key, body) VALUES ($1, $2, $3)")
            .bind(&event.id)
            .bind(event.routing_key())
            .bind(&event.body)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(event)
}

async fn publish_confirmed(app: &App, event: &OutboundEvent) -> anyhow::Result<()> {
    let mut properties = publish::json_properties(&event.id, event.routing_key());
    if let Some(correlation_id) = &event.correlation_id {
        properties = properties.with_correlation_id(correlation_id.as_str().into());
    }
    let confirm = app
        .publish
        .basic_publish(
            app.exchange.as_str().into(),
            event.routing_key().into(),
            BasicPublishOptions::default(),
            &event.body,
            properties,
        )
        .await?;
    publish::check(confirm.await?, event.routing_key())?;
    Ok(())
}

fn order_gateway(order: &Order) -> domain::ids::GatewayId {
    match &order.payment_source {
        Some(PaymentSource::External(payment)) => payment.gateway_id.clone(),
        _ => domain::ids::GatewayId::stored(String::new()),
    }
}

/// `Visa ending in 4242`, like the worker names sources.
fn source_name(metadata: &Map<String, Value>) -> String {
    let text = |key| metadata.get(key).and_then(Value::as_str).unwrap_or("card");
    let brand = text("brand");
    let mut chars = brand.chars();
    let capitalised: String = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default();
    format!("{capitalised} ending in {}", text("last4"))
}

/// Deletes what `Topology::declare` created for this queue, and the exchange.
async fn teardown(connection: &Connection, topology: &Topology) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    for queue in topology.queues() {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("cannot delete queue {queue}"))?;
    }
    channel
        .exchange_delete(
            topology.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    let _ = connection.close(200, "torn down".into()).await;
    Ok(())
}
