//! Test harness: `spawn_worker()` gives each test its own database, exchange and queues,
//! a gateway stub, a channel to publish on and a queue that collects the worker's events.

#![allow(dead_code)]

pub use crate::cleanup::Cleanup;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wallet_worker::config::{AmqpArgs, DbArgs, WorkerArgs};
use wallet_worker::crypto::{DataKeys, Keyring};
use wallet_worker::domain::Secret;
use wallet_worker::gateway::{sign, verify};
use wallet_worker::store::dead_letters::DeadLetter;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
pub const GATEWAY_ID: &str = "acme-pay";
pub const GATEWAY_SECRET: &str = "whsec_test_gateway_secret_9f8e";
pub const ADMIN_TOKEN: &str = "admin_test_token_5d4c3b";
/// The data-encryption keys of every test worker and CLI run (each test has its own
/// database, so one key serves them all): `WALLET_ENCRYPTION_KEYS` text.
pub const TEST_KEYS: &str = "test-2026:diU5GxC3Y4v6G633hYTqyOr/WLz+ZmuUe2lKhC3Hn/Y=";

pub fn test_keys() -> DataKeys {
    DataKeys::parse(&Secret::new(TEST_KEYS)).expect("the test keys parse")
}

/// The keyring of `pool`'s database under [`TEST_KEYS`].
pub async fn test_keyring(pool: &PgPool) -> Keyring {
    wallet_worker::store::keys::keyring(pool, test_keys())
        .await
        .expect("keyring")
}
/// How long a test waits for something the worker should do.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Every log line the worker wrote in this test process (JSON), for secret scans.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log buffer")).into_owned()
}

/// Log lines this test process captured that contain `needle` (counted in place: the
/// buffer of a long cluster run is large).
pub fn log_lines_containing(needle: &str) -> usize {
    let buffer = log_buffer().lock().expect("log buffer");
    buffer
        .split(|byte| *byte == b'\n')
        .filter(|line| line.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .count()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufferWriter;
impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .expect("log buffer")
            .extend_from_slice(buf);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line at trace level (silent unless `TEST_LOG` is set).
fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_env_filter("trace,h2=info,hyper=info,reqwest=info,lapin=debug,amq_protocol=info")
            .with_writer(|| BufferWriter)
            .try_init();
    });
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A worker running in this process with everything of its own.
pub struct TestWorker {
    pub pool: PgPool,
    /// The keyring of the worker's database: seals and opens what tests store by hand.
    pub keys: Keyring,
    pub args: WorkerArgs,
    pub channel: Channel,
    pub connection: Connection,
    pub events: Consumer,
    /// Events read while looking for another one, kept for later calls.
    stashed: Vec<Event>,
    /// `wallet.dead_lettered` events, kept apart: most tests wait for outcomes.
    dead_letter_events: Vec<Event>,
    pub gateway: MockServer,
    pub admin_addr: SocketAddr,
    /// The last dead-letter row [`TestWorker::next_dead_letter`] returned.
    dead_letters_seen: std::sync::atomic::AtomicI64,
    /// The metrics-only listener, when the test asked for one (`metrics_addr`).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Removes the test's database, exchange and queues when the worker is dropped,
    /// however the test ended; tests add what else they create.
    pub cleanup: Cleanup,
}

/// Worker arguments for a fresh database and fresh queues; tests tweak them.
pub fn test_args() -> WorkerArgs {
    let id = uuid::Uuid::new_v4().simple().to_string();
    WorkerArgs {
        db: DbArgs {
            database_url: format!("{PG_BASE}/wallet_test_{id}"),
        },
        amqp: AmqpArgs {
            amqp_url: AMQP_URL.into(),
            exchange: format!("test-commerce-{id}"),
            queue: format!("test-wallet-{id}"),
        },
        prefetch: 16,
        max_attempts: 4,
        retry_base_ms: 50,
        retry_max_ms: 400,
        admin_addr: "127.0.0.1:0".parse().expect("address"),
        admin_token_file: None,
        metrics_addr: None,
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        circuit_threshold: 50,
        circuit_cool_down_ms: 1_000,
        // Six tests run at once against one Postgres (100 connections, shared with
        // whatever else runs on the machine): three handler connections and the commit
        // loop's are plenty at prefetch 16, and keep the suite well under the limit.
        db_pool_size: Some(4),
        shutdown_grace_secs: 10,
        // Bulk tests save hundreds of cards per customer; the cap's own tests lower it.
        max_sources_per_customer: 1_000_000,
        clock: Default::default(),
        keys: Some(test_keys()),
        inbox_retention_days: 30,
        order_retention_days: 90,
        dead_letter_retention_days: 30,
        retention_interval_ms: 600_000,
        db_statement_timeout_ms: 15_000,
        db_lock_timeout_ms: 5_000,
        commit_stall_secs: 30,
    }
}

pub async fn spawn_worker() -> TestWorker {
    spawn_worker_with(test_args()).await
}

pub async fn spawn_worker_with(args: WorkerArgs) -> TestWorker {
    init_logs();
    let cleanup = Cleanup::of_worker(&args);
    let gateway = MockServer::start().await;
    let pool =
        wallet_worker::store::connect_and_migrate(&args.db.database_url, 2, args.keys.as_ref())
            .await
            .expect("test database");
    let keys = args.keys.clone().unwrap_or_else(test_keys);
    let keys = wallet_worker::store::keys::keyring(&pool, keys)
        .await
        .expect("keyring");
    register_gateway_with(
        &keys,
        &pool,
        GATEWAY_ID,
        &format!("{}/token", gateway.uri()),
    )
    .await;
    let connection = wallet_worker::broker::connect(AMQP_URL, "test")
        .await
        .expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let shutdown = CancellationToken::new();
    let running = wallet_worker::worker::start(args.clone().into(), shutdown.clone())
        .await
        .expect("worker starts");
    let events = event_consumer(&channel, &args).await;
    let worker = TestWorker {
        pool,
        keys,
        args,
        channel,
        connection,
        events,
        stashed: Vec::new(),
        dead_letter_events: Vec::new(),
        gateway,
        admin_addr: running.admin_addr,
        dead_letters_seen: Default::default(),
        metrics_addr: running.metrics_addr,
        shutdown,
        task: Some(running.task),
        cleanup,
    };
    worker.wait_until_ready().await;
    worker
}

/// A private queue bound to the worker's outbound event keys.
async fn event_consumer(channel: &Channel, args: &WorkerArgs) -> Consumer {
    let exchange = &args.amqp.exchange;
    // The worker declares the exchange; declare it too so binding never races it.
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("event queue");
    for key in [
        "wallet.saved",
        "wallet.save_failed",
        "wallet.attached",
        "wallet.attach_rejected",
        "wallet.removed",
        "wallet.remove_rejected",
        "wallet.default_set",
        "wallet.default_rejected",
        "wallet.dead_lettered",
    ] {
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
    }
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume events")
}

pub async fn register_gateway(pool: &PgPool, id: &str, token_url: &str) {
    register_gateway_with(&test_keyring(pool).await, pool, id, token_url).await;
}

/// [`register_gateway`], its secret sealed with `keys`.
pub async fn register_gateway_with(keys: &Keyring, pool: &PgPool, id: &str, token_url: &str) {
    let secret = Secret::new(GATEWAY_SECRET);
    wallet_worker::store::gateways::upsert(pool, keys, id, token_url, &secret, true)
        .await
        .expect("gateway");
}

/// An outbox row as a crashed worker leaves it: committed (a minute ago, so the next
/// sweep takes it), never published; its body sealed as the worker seals it.
pub async fn leave_outbox_row(
    pool: &PgPool,
    event_id: &str,
    routing_key: &str,
    body: &Value,
    trace: Option<(&str, &str)>,
) {
    let keys = test_keyring(pool).await;
    let body = serde_json::to_vec(body).expect("json");
    let at = wallet_worker::store::keys::OUTBOX.row("body", event_id);
    let sealed = keys.seal(&body, at);
    sqlx::query(
        "INSERT INTO outbox (event_id, routing_key, causation_id, key_id, body, traceparent,
                             tracestate, created_at)
         VALUES ($1, $2, 'msg-before-crash', $3, $4, $5, $6, now() - interval '1 minute')",
    )
    .bind(event_id)
    .bind(routing_key)
    .bind(&*sealed.key_id)
    .bind(&sealed.bytes)
    .bind(trace.map(|t| t.0))
    .bind(trace.map(|t| t.1))
    .execute(pool)
    .await
    .expect("outbox row");
}

/// An outbound event as a pipeline would receive it.
#[derive(Debug, Clone)]
pub struct Event {
    pub routing_key: String,
    pub body: Value,
    pub properties: BasicProperties,
}

impl Event {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
}

impl TestWorker {
    pub async fn wait_until_ready(&self) {
        let url = format!("http://{}/readyz", self.admin_addr);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes a message the way a pipeline does: persistent JSON with `message_id`.
    /// Publishes a valid message: it must satisfy its schema in `docs/schemas/`.
    pub async fn publish(&self, routing_key: &str, envelope: &Value) {
        crate::schemas::assert_valid(routing_key, envelope);
        self.publish_unchecked(routing_key, envelope).await;
    }

    /// Publishes `envelope` as JSON whatever it holds (malformed-input tests).
    pub async fn publish_unchecked(&self, routing_key: &str, envelope: &Value) {
        let id = envelope["id"].as_str().unwrap_or_default();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(id.into());
        self.publish_raw(
            routing_key,
            &serde_json::to_vec(envelope).expect("json"),
            properties,
        )
        .await;
    }

    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        self.channel
            .basic_publish(
                self.args.amqp.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// The next event the worker published, acked.
    pub async fn next_event(&mut self) -> Event {
        self.next_event_within(PATIENCE)
            .await
            .expect("an event within the patience window")
    }

    /// The next event, or `None` if none comes within `window`.
    pub async fn next_event_within(&mut self, window: Duration) -> Option<Event> {
        if !self.stashed.is_empty() {
            return Some(self.stashed.remove(0));
        }
        self.read_event(window).await
    }

    /// The next outcome event; `wallet.dead_lettered` events read meanwhile are kept
    /// for [`Self::dead_lettered_event`].
    async fn read_event(&mut self, window: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + window;
        loop {
            let event = self.read_any_event(deadline).await?;
            if event.routing_key == "wallet.dead_lettered" {
                self.dead_letter_events.push(event);
            } else {
                return Some(event);
            }
        }
    }

    async fn read_any_event(&mut self, deadline: tokio::time::Instant) -> Option<Event> {
        let delivery = tokio::time::timeout_at(deadline, self.events.next())
            .await
            .ok()?
            .expect("event stream open")
            .expect("event delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        let body: Value = serde_json::from_slice(&delivery.data).expect("events are JSON");
        // Every event the worker emits matches its documented schema.
        crate::schemas::assert_valid(delivery.routing_key.as_str(), &body);
        Some(Event {
            routing_key: delivery.routing_key.to_string(),
            body,
            properties: delivery.properties.clone(),
        })
    }

    /// The `wallet.dead_lettered` event of the message `message_id` (`None`: of a
    /// message without an id); outcome events read meanwhile stay for later calls.
    pub async fn dead_lettered_event(&mut self, message_id: Option<&str>) -> Event {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let matches = |event: &Event| event.body["data"]["message_id"].as_str() == message_id;
        loop {
            if let Some(at) = self.dead_letter_events.iter().position(matches) {
                return self.dead_letter_events.remove(at);
            }
            let event = self
                .read_any_event(deadline)
                .await
                .expect("a wallet.dead_lettered event within the patience window");
            if event.routing_key == "wallet.dead_lettered" {
                self.dead_letter_events.push(event);
            } else {
                self.stashed.push(event);
            }
        }
    }

    /// The next `wallet.dead_lettered` event, whichever message it announces; outcome
    /// events read meanwhile stay for later calls.
    pub async fn dead_lettered_event_any(&mut self) -> Event {
        if !self.dead_letter_events.is_empty() {
            return self.dead_letter_events.remove(0);
        }
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let event = self
                .read_any_event(deadline)
                .await
                .expect("a wallet.dead_lettered event within the patience window");
            if event.routing_key == "wallet.dead_lettered" {
                return event;
            }
            self.stashed.push(event);
        }
    }

    /// The event caused by `message_id`; others read meanwhile stay for later calls.
    pub async fn event_caused_by(&mut self, message_id: &str) -> Event {
        let caused = |event: &Event| event.body["causation_id"] == message_id;
        if let Some(at) = self.stashed.iter().position(caused) {
            return self.stashed.remove(at);
        }
        let mut skipped = Vec::new();
        let event = loop {
            let event = self
                .read_event(PATIENCE)
                .await
                .expect("an event within the patience window");
            if caused(&event) {
                break event;
            }
            skipped.push(event);
        };
        self.stashed.extend(skipped);
        event
    }

    /// No further event arrives within `window` (used after a known last event).
    pub async fn assert_no_event_within(&mut self, window: Duration) {
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(window, self.events.next()).await {
            panic!(
                "unexpected event {}: {}",
                delivery.routing_key,
                String::from_utf8_lossy(&delivery.data)
            );
        }
    }

    /// Waits for the next dead letter the worker stored (each returned once, in the
    /// order the store took them).
    pub async fn next_dead_letter(&self) -> StoredDeadLetter {
        use std::sync::atomic::Ordering;
        let seen = self.dead_letters_seen.load(Ordering::SeqCst);
        let sql = format!(
            "SELECT {} FROM dead_letters WHERE id > $1 ORDER BY id LIMIT 1",
            wallet_worker::store::dead_letters::COLUMNS
        );
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let row: Option<wallet_worker::store::dead_letters::Stored> = sqlx::query_as(&sql)
                .bind(seen)
                .fetch_optional(&self.pool)
                .await
                .expect("dead-letter query");
            if let Some(row) = row {
                let row: DeadLetter = row.open(self.keys.data_keys()).expect("it opens");
                self.dead_letters_seen.store(row.id, Ordering::SeqCst);
                return StoredDeadLetter::of(row);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no dead letter stored within the patience window"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }

    /// Stops the worker gracefully; dropping the harness then removes the test's
    /// database, queues and exchange ([`Cleanup`]).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("worker task")
                .expect("worker exits cleanly");
        }
        self.pool.close().await;
    }
}

impl Drop for TestWorker {
    /// A test that failed leaves its worker running: stop it taking messages before the
    /// clean-up deletes its queues (a worker still running could declare them again).
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---- messages ----

pub fn envelope(kind: &str, data: Value) -> Value {
    json!({
        "id": unique("msg"),
        "type": kind,
        "occurred_at": "2026-11-27T16:00:00Z",
        "correlation_id": unique("corr"),
        "data": data,
    })
}

/// An `order.placed` of `customer_id` paying with `token` at the test gateway.
pub fn order_placed(order_id: &str, customer_id: &str, token: &str, save: bool) -> Value {
    envelope(
        "order.placed",
        json!({ "order": {
            "id": order_id, "number": "1234", "status": "placed",
            "customer": { "id": customer_id, "email": "jane@example.com" },
            "guest": false, "currency_code": "EUR", "total_amount_cents": 12900,
            "payment_source": { "type": "external_payments", "id": unique("ps"),
                "gateway_id": GATEWAY_ID, "payment_source_token": token,
                "metadata": { "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030 } },
            "save_payment_source_to_customer_wallet": save } }),
    )
}

pub fn wallet_save(order_id: &str) -> Value {
    envelope("wallet.save", json!({ "order_id": order_id }))
}

pub fn wallet_attach(order_id: &str, status: &str, customer_id: &str, source_id: &str) -> Value {
    envelope(
        "wallet.attach",
        json!({ "order": { "id": order_id, "status": status, "customer": { "id": customer_id } },
                "customer_payment_source_id": source_id }),
    )
}

// ---- gateway stub ----

/// The tokens the stub returns for a customer and an order's payment source token.
pub fn customer_token_for(customer_id: &str) -> String {
    format!("cus_tok_{customer_id}")
}

pub fn source_token_for(order_token: &str) -> String {
    format!("pst_{order_token}")
}

/// A token_url that checks the signature and the Idempotency-Key like a real gateway,
/// and answers with tokens derived from the request.
pub struct SigningGateway;

impl Respond for SigningGateway {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let signature = request
            .headers
            .get("X-CommerceLayer-Signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !verify(&request.body, &Secret::new(GATEWAY_SECRET), signature) {
            return ResponseTemplate::new(401).set_body_json(json!({
                "success": false, "data": { "error": { "code": "invalid_signature", "message": "bad signature" } } }));
        }
        if request.headers.get("Idempotency-Key").is_none() {
            return ResponseTemplate::new(400);
        }
        let doc: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let token = doc["data"]["attributes"]["payment_source_token"]
            .as_str()
            .unwrap_or("");
        let customer = doc["included"]
            .as_array()
            .and_then(|inc| inc.iter().find(|r| r["type"] == "customers"))
            .and_then(|c| c["id"].as_str())
            .unwrap_or("");
        ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "data": { "customer_token": customer_token_for(customer),
                      "payment_source_token": source_token_for(token),
                      "metadata": { "fingerprint": "fp_1" } } }))
    }
}

impl TestWorker {
    /// Mounts the signing gateway as the token_url.
    pub async fn gateway_accepts(&self) {
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(SigningGateway)
            .mount(&self.gateway)
            .await;
    }

    pub async fn gateway_requests(&self) -> Vec<Request> {
        self.gateway.received_requests().await.unwrap_or_default()
    }
}

/// Signs like the worker does (for tests that build requests by hand).
pub fn signature(body: &[u8]) -> String {
    sign(body, &Secret::new(GATEWAY_SECRET))
}

// ---- process-based tests ----

impl TestWorker {
    /// Stops the in-process worker, keeping the harness (database, stub, event queue) so
    /// worker processes can take over the queue.
    /// Waits for the in-process worker to stop by itself (an internal task died) and
    /// returns how it ended.
    pub async fn stopped_by_itself(&mut self) -> anyhow::Result<()> {
        let task = self.task.take().expect("the worker is running");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the worker stops by itself")
            .expect("worker task")
    }

    pub async fn pause_in_process_worker(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("worker task")
                .expect("worker exits cleanly");
        }
    }
}

/// Message `i` of a bulk run: an order.placed that saves a card of its own, for one of
/// 50 customers.
pub fn bulk_save(tag: &str, i: usize) -> Value {
    order_placed(
        &format!("ord_{tag}_{i}"),
        &format!("cus_{tag}_{}", i % 50),
        &format!("tok_{tag}_{i}"),
        true,
    )
}

/// Publishes `count` order.placed messages that each save a distinct card; returns ids.
pub async fn publish_saves(w: &TestWorker, tag: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let msg = bulk_save(tag, i);
        w.publish("order.placed", &msg).await;
        ids.push(msg["id"].as_str().expect("id").to_owned());
    }
    ids
}

// ---- dead letters ----

impl TestWorker {
    /// The worker's exchange and queue names, for the dead-letter operations.
    pub fn topology(&self) -> wallet_worker::broker::Topology {
        wallet_worker::broker::Topology::new(
            &self.args.amqp.exchange,
            &self.args.amqp.queue,
            self.args.retry_base_ms,
            self.args.retry_max_ms,
        )
    }

    /// Dead letters waiting in the store (not replayed).
    pub async fn dead_letter_count(&self) -> u32 {
        let n = self
            .count("SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL")
            .await;
        u32::try_from(n).expect("a count")
    }

    /// Polls until the store holds exactly `n` dead letters waiting.
    pub async fn wait_for_dead_letters(&self, n: u32) {
        self.wait_for_count(
            "SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL",
            i64::from(n),
        )
        .await;
    }

    /// Polls until `sql` (a `count(*)`) returns `n`.
    pub async fn wait_for_count(&self, sql: &str, n: i64) {
        self.wait_for_count_where(sql, n, |count| count == n).await;
    }

    /// Polls until `sql` (a `count(*)`) returns at least `n`: progress under load.
    pub async fn wait_for_at_least(&self, sql: &str, n: i64) {
        self.wait_for_count_where(sql, n, |count| count >= n).await;
    }

    /// Fails when the count stayed the same for [`PATIENCE`]: a slow machine moves it
    /// slowly, a stuck worker not at all.
    async fn wait_for_count_where(&self, sql: &str, n: i64, done: impl Fn(i64) -> bool) {
        let mut last = None;
        let mut deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let count = self.count(sql).await;
            if done(count) {
                return;
            }
            if last.is_some_and(|last| last != count) {
                deadline = tokio::time::Instant::now() + PATIENCE;
            }
            last = Some(count);
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sql} gave {count} for {PATIENCE:?}, expected {n}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A dead letter as the store keeps it: its message rebuilt from the stored body,
/// properties and headers (what a replay publishes, and what `.dlq` held), and the row.
pub struct StoredDeadLetter {
    /// The body, byte for byte.
    pub data: Vec<u8>,
    pub properties: BasicProperties,
    pub row: DeadLetter,
}

impl StoredDeadLetter {
    pub fn of(row: DeadLetter) -> Self {
        use wallet_worker::broker::amqp_json;
        let headers = amqp_json::headers_from_json(&row.headers);
        Self {
            data: row.body.clone(),
            properties: amqp_json::properties_from_json(&row.properties, headers),
            row,
        }
    }
}

// ---- the admin server and the CLI, as an operator uses them ----

/// What a run of the real binary printed.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `wallet-worker ARGS` against `database_url`, logging everything (trace, JSON).
pub async fn run_cli(database_url: &str, args: &[&str]) -> CliOutput {
    run_cli_with(database_url, &[], args).await
}

/// [`run_cli`] with more environment variables (the broker, for commands that publish).
pub async fn run_cli_with(database_url: &str, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", database_url)
        .env("WALLET_ENCRYPTION_KEYS", TEST_KEYS)
        .envs(env.iter().copied())
        .env("RUST_LOG", "trace")
        .output()
        .await
        .expect("wallet-worker binary runs");
    CliOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl TestWorker {
    /// GET `path` on the admin server, with `Authorization: <authorization>` when given.
    pub async fn admin_get(&self, path: &str, authorization: Option<&str>) -> (u16, String) {
        let mut request = reqwest::Client::new().get(format!("http://{}{path}", self.admin_addr));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let response = request.send().await.expect("admin server answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("admin body"))
    }
}
