//! Verified transport (docs/interface.md, configuration): against a Postgres and a
//! RabbitMQ of the test's own that accept only TLS, with a certificate from a CA the
//! test makes, the worker connects with `sslmode=verify-full` and `amqps://`, trusting
//! that CA through `WALLET_TLS_CA_FILE`, handles a message and publishes its event; with
//! another CA it refuses the servers in one clear line.

use crate::helpers::*;
use crate::process::WorkerProcess;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::PathBuf;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/tls-servers.sh");
/// The ports `tls-servers.sh` gives them.
const POSTGRES: &str = "127.0.0.1:5691";
const AMQPS: &str = "127.0.0.1:5692";
/// How long the worker process may take to start: a process of its own that migrates
/// over TLS, which on a busy machine running the whole suite takes longer than the
/// in-process workers' start.
const START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(90);

/// The TLS-only servers, stopped (and their state removed) when dropped.
struct Servers {
    dir: tempfile::TempDir,
}

impl Servers {
    /// Makes a CA and a certificate it signs for 127.0.0.1 and localhost, and another
    /// CA that signed nothing here, then starts the servers with that certificate.
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Postgres runs as `postgres` and must reach its files under it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let ca = certificate_authority("wallet-worker test CA");
        let server_key = KeyPair::generate().expect("key");
        let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params")
            .signed_by(&server_key, &ca)
            .expect("server certificate");
        let write =
            |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect(name);
        write("ca.pem", ca.pem());
        write("server.pem", server.pem());
        write("server.key", server_key.serialize_pem());
        write("other-ca.pem", certificate_authority("another CA").pem());
        let servers = Self { dir };
        let started = std::process::Command::new(SCRIPT)
            .args(["start", &servers.dir.path().to_string_lossy()])
            .status()
            .expect("tls-servers.sh runs");
        assert!(started.success(), "the TLS servers did not start");
        servers
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = std::process::Command::new(SCRIPT)
            .args(["stop", &self.dir.path().to_string_lossy()])
            .status();
    }
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

#[tokio::test]
async fn the_worker_uses_verified_tls_to_postgres_and_rabbitmq_and_refuses_an_unknown_ca() {
    let servers = Servers::start();
    let ca = servers.file("ca.pem");
    // This test process trusts the test CA too, for its own connections.
    wallet_worker::tls::configure(Some(&ca)).expect("the CA file loads");
    let mut args = test_args();
    args.db.database_url = format!("postgres://postgres@{POSTGRES}/wallet_tls?sslmode=verify-full");
    args.amqp.amqp_url = format!("amqps://guest:guest@{AMQPS}/%2f");

    let pool =
        wallet_worker::store::connect_and_migrate(&args.db.database_url, 2, Some(&test_keys()))
            .await
            .expect("Postgres over verify-full");
    let gateway = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(SigningGateway)
        .mount(&gateway)
        .await;
    register_gateway(&pool, GATEWAY_ID, &format!("{}/token", gateway.uri())).await;
    let connection = wallet_worker::broker::connect(&args.amqp.amqp_url, "test")
        .await
        .expect("RabbitMQ over amqps");
    let channel = connection.create_channel().await.expect("channel");
    let mut events = saved_events(&channel, &args.amqp.exchange).await;

    let ca_env = ca.to_string_lossy().into_owned();
    let worker = WorkerProcess::start_with_env(&args, &[("WALLET_TLS_CA_FILE", &ca_env)]);
    wait_for_queue(&connection, &args.amqp.queue).await;
    let order = order_placed(&unique("ord"), &unique("cus"), &unique("tok"), true);
    channel
        .basic_publish(
            args.amqp.exchange.as_str().into(),
            "order.placed".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&order).unwrap(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    let delivery = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("wallet.saved within the patience window")
        .expect("event stream open")
        .expect("event");
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
    let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(event["causation_id"], order["id"]);
    assert!(worker.terminate().await.success());

    let other = servers.file("other-ca.pem").to_string_lossy().into_owned();
    let untrusted = [("WALLET_TLS_CA_FILE", other.as_str())];
    let migrate = run_cli_with(&args.db.database_url, &untrusted, &["migrate"]).await;
    assert_refused(&migrate, "migrate over verify-full");
    let broker = [untrusted[0], ("AMQP_URL", args.amqp.amqp_url.as_str())];
    let loadgen = run_cli_with(&args.db.database_url, &broker, &["loadgen", "--count", "1"]).await;
    assert_refused(&loadgen, "loadgen over amqps");
    pool.close().await;
}

/// A queue of the test's that receives `wallet.saved` (the exchange declared first).
async fn saved_events(channel: &Channel, exchange: &str) -> lapin::Consumer {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
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
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "wallet.saved".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume")
}

/// Waits until the worker process consumes its queue (a passive declare on a fresh
/// channel each time: a failed one closes its channel). The queue exists a moment before
/// its bindings do, and a message published in between is unroutable and gone; a
/// consumer on it means the worker declared its whole topology first.
async fn wait_for_queue(connection: &lapin::Connection, queue: &str) {
    let deadline = tokio::time::Instant::now() + START_PATIENCE;
    loop {
        let channel = connection.create_channel().await.expect("channel");
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        if let Ok(declared) = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            && declared.consumer_count() > 0
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never consumed {queue} over amqps"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The command failed with one human line that says the certificate was not trusted.
fn assert_refused(out: &CliOutput, what: &str) {
    assert!(!out.success, "{what} succeeded with an untrusted CA");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("wallet-worker:"))
        .collect();
    assert_eq!(lines.len(), 1, "{what}: {}", out.stderr);
    assert!(
        lines[0].contains("certificate") && lines[0].contains("WALLET_TLS_CA_FILE"),
        "{what}: {}",
        lines[0]
    );
    println!("[tls] {what} with another CA: {}", lines[0]);
}
