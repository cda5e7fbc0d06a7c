//! The command line (docs/interface.md, command line): one clap tree, every setting also an environment variable.

use crate::crypto::DataKeys;
use crate::domain::{Clock, Secret};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Saves customers' external payment sources into their wallet and reuses them,
/// driven by RabbitMQ messages, with state in Postgres.
#[derive(Debug, Parser)]
#[command(name = "wallet-worker", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub logging: LogArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Where `run`, `migrate`, `demo`, `gateway set`, `wallet remove|set-default` and `keys`
/// find the data-encryption keys: never on the command line.
const KEYS_HELP: &str = "Data-encryption keys come from WALLET_ENCRYPTION_KEYS \
    (ID:BASE64,ID:BASE64..., 32-byte keys, the first active) or the file named by \
    WALLET_ENCRYPTION_KEYS_FILE; never from the command line.";

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Apply migrations, declare the AMQP topology and consume until SIGINT/SIGTERM.
    #[command(after_help = KEYS_HELP)]
    Run(WorkerArgs),
    /// Apply database migrations (sealing secrets stored in plaintext by an earlier
    /// version) and exit.
    #[command(after_help = KEYS_HELP)]
    Migrate(DbArgs),
    /// Data-encryption keys: which rows each key seals, and re-sealing under the active key.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage external gateways (their token_url and signing secret).
    #[command(subcommand)]
    Gateway(GatewayCmd),
    /// Inspect customers' wallets.
    #[command(subcommand)]
    Wallet(WalletCmd),
    /// Inspect and act on dead letters.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Move queues declared by an older worker onto the current (quorum) topology,
    /// keeping every message; run it with the workers stopped.
    UpgradeQueues(UpgradeArgs),
    /// Serve a local token_url endpoint that verifies signatures (development, load tests).
    GatewaySim(GatewaySimArgs),
    /// Publish realistic traffic, wait for completions, print throughput and latency.
    Loadgen(LoadgenArgs),
    /// Run the whole product once on local Postgres and RabbitMQ and print what happened.
    #[command(after_help = KEYS_HELP)]
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log output format.
    #[arg(long, env = "WALLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,
}

/// What every TLS client of the process trusts (Postgres, RabbitMQ, token_urls, OTLP).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM file of CA certificates to trust besides the OS store, for `amqps://`,
    /// Postgres `sslmode=verify-full` (unless DATABASE_URL names its own `sslrootcert`),
    /// https token_urls and the OTLP exporter.
    #[arg(long, env = "WALLET_TLS_CA_FILE", value_name = "FILE", global = true)]
    pub tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Postgres URL; `run`, `migrate` and `demo` create the database when it does not
    /// exist. TLS via `sslmode`. [default: postgres://postgres@127.0.0.1:5432/wallet]
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/wallet",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct AmqpArgs {
    /// Broker URL; use `amqps://` for TLS. Several comma-separated URLs name the nodes
    /// of one cluster. [default: amqp://guest:***@127.0.0.1:5672/%2f]
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub amqp_url: String,
    /// Topic exchange for inbound and outbound messages.
    #[arg(long, env = "WALLET_EXCHANGE", default_value = "commerce")]
    pub exchange: String,
    /// The worker's inbound queue; the dead-letter queue is `<queue>.dlq`.
    #[arg(long, env = "WALLET_QUEUE", default_value = "wallet-worker")]
    pub queue: String,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Messages in flight per worker process.
    #[arg(long, env = "WALLET_PREFETCH", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Attempts before a transiently failing message is dead-lettered.
    #[arg(long, env = "WALLET_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Delayed-retry backoff: first delay, in milliseconds.
    #[arg(long, env = "WALLET_RETRY_BASE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,
    /// Delayed-retry backoff: longest delay, in milliseconds.
    #[arg(long, env = "WALLET_RETRY_MAX_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_ms: u64,
    /// Admin HTTP server (health, readiness, metrics, read API, console).
    #[arg(long, env = "WALLET_ADMIN_ADDR", default_value = "127.0.0.1:9090")]
    pub admin_addr: SocketAddr,
    /// A second listener that serves only /metrics, /healthz and /readyz, for
    /// Prometheus and probes; the admin address can then stay on loopback.
    #[arg(long, env = "WALLET_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// File holding the admin token: the read API's bearer token and the console's
    /// password (or the token itself in WALLET_ADMIN_TOKEN; never on the command line).
    /// Without a token the read API and the console are off.
    #[arg(long, env = "WALLET_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token, read from WALLET_ADMIN_TOKEN or the file by
    /// [`WorkerArgs::load_secrets`].
    #[arg(skip)]
    pub admin_token: Option<Secret>,
    /// Postgres connections of this process; by default derived from the prefetch.
    #[arg(long, env = "WALLET_DB_POOL_SIZE", value_parser = clap::value_parser!(u32).range(2..))]
    pub db_pool_size: Option<u32>,
    /// Consecutive transient gateway failures that open its circuit.
    #[arg(long, env = "WALLET_CIRCUIT_THRESHOLD", default_value_t = 5, value_parser = clap::value_parser!(i32).range(1..))]
    pub circuit_threshold: i32,
    /// How long an open circuit keeps calls away from a gateway, in milliseconds.
    #[arg(long, env = "WALLET_CIRCUIT_COOL_DOWN_MS", default_value_t = 30_000)]
    pub circuit_cool_down_ms: u64,
    /// Seconds given to in-flight messages on SIGINT/SIGTERM before they are handed back.
    #[arg(long, env = "WALLET_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// Unexpired payment sources one customer may hold; a new card beyond it is refused
    /// (`wallet_full`).
    #[arg(long, env = "WALLET_MAX_SOURCES_PER_CUSTOMER", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..))]
    pub max_sources_per_customer: i64,
    /// The clock of the wallet rules (card expiry); tests set it.
    #[arg(skip)]
    pub clock: Clock,
    /// The data-encryption keys; `None`: read from the environment at start (tests set
    /// them, never the command line).
    #[arg(skip)]
    pub keys: Option<DataKeys>,
    /// Days a processed message id is remembered: the dedupe window. A redelivery
    /// after it is treated as a new message.
    #[arg(long, env = "WALLET_INBOX_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub inbox_retention_days: u32,
    /// Days an order (and the payment source token it carries) is kept after its last change.
    #[arg(long, env = "WALLET_ORDER_RETENTION_DAYS", default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..))]
    pub order_retention_days: u32,
    /// Longest a database statement may run on the worker's connections, in
    /// milliseconds; one that runs out of time is tried again, as in an outage.
    #[arg(long, env = "WALLET_DB_STATEMENT_TIMEOUT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_statement_timeout_ms: u64,
    /// Longest a database statement may wait for a lock, in milliseconds.
    #[arg(long, env = "WALLET_DB_LOCK_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_lock_timeout_ms: u64,
    /// Seconds a commit may wait before `/readyz` reports the worker's commits stalled.
    #[arg(long, env = "WALLET_COMMIT_STALL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub commit_stall_secs: u64,
    /// Days a dead letter is kept in the dead-letter store after it arrived there.
    #[arg(long, env = "WALLET_DEAD_LETTER_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub dead_letter_retention_days: u32,
    /// Milliseconds between two retention passes (tests shorten it).
    #[arg(long, env = "WALLET_RETENTION_INTERVAL_MS", default_value_t = 600_000, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval_ms: u64,
}

impl WorkerArgs {
    /// Reads the secrets that never come from the command line (`WALLET_ADMIN_TOKEN` or
    /// its file).
    pub fn load_secrets(mut self) -> anyhow::Result<Self> {
        self.admin_token = crate::secrets::from_env_or_file(
            "WALLET_ADMIN_TOKEN",
            self.admin_token_file.as_deref(),
        )?;
        Ok(self)
    }
}

/// What `upgrade-queues` needs: the broker, the queue, and the retry settings the
/// workers run with (they name the retry levels, old and new).
#[derive(Debug, Clone, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Delayed-retry backoff: first delay, in milliseconds (as the workers have it).
    #[arg(long, env = "WALLET_RETRY_BASE_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_base_ms: u64,
    /// Delayed-retry backoff: longest delay, in milliseconds (as the workers have it).
    #[arg(long, env = "WALLET_RETRY_MAX_MS", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_max_ms: u64,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// Create or update a gateway.
    #[command(after_help = KEYS_HELP)]
    Set {
        #[command(flatten)]
        db: DbArgs,
        /// Gateway id, as orders' payment sources name it (e.g. `acme-pay`).
        id: String,
        /// Where to POST save requests; https unless the host is loopback.
        #[arg(long)]
        token_url: String,
        /// File holding the HMAC-SHA256 key for `X-CommerceLayer-Signature` (or the key
        /// itself in WALLET_GATEWAY_SECRET).
        #[arg(long, env = "WALLET_GATEWAY_SECRET_FILE", value_name = "FILE")]
        secret_file: Option<PathBuf>,
        /// The key itself. Accepted for scripts written against the first interface, with
        /// a warning: the command line is visible to every user of the machine (`ps`);
        /// prefer WALLET_GATEWAY_SECRET or --secret-file.
        #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
        secret: Option<Secret>,
        /// Keep the gateway but refuse saves (no call is made) and attaches of its
        /// sources (`gateway_disabled`); its sources are not available meanwhile.
        #[arg(long)]
        disabled: bool,
    },
    /// List gateways with their circuit state.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a gateway; its saved sources stay but can no longer be attached.
    Remove {
        #[command(flatten)]
        db: DbArgs,
        /// Gateway id (as `gateway list` shows it).
        id: String,
    },
    /// Close an open circuit so workers call the gateway again at once.
    ResetCircuit {
        #[command(flatten)]
        db: DbArgs,
        /// Gateway id (as `gateway list` shows it).
        id: String,
        #[command(flatten)]
        actor: ActorArg,
    },
}

/// Who runs an operator command, for the audit log.
#[derive(Debug, Clone, Args)]
pub struct ActorArg {
    /// Who does this, for the audit log (the login name by default).
    #[arg(
        long = "actor",
        env = "USER",
        default_value = "unknown",
        hide_env_values = true
    )]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum WalletCmd {
    /// List a customer's available payment sources, the default first (never a token).
    List {
        #[command(flatten)]
        db: DbArgs,
        /// The customer's id, as orders name it (e.g. `kWnEhpRgYD`).
        customer_id: String,
        /// Also list the unavailable ones (expired, or their gateway disabled or removed).
        #[arg(long)]
        all: bool,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a source from the customer's wallet (as `wallet.remove` does).
    #[command(after_help = KEYS_HELP)]
    Remove(WalletChangeArgs),
    /// Make a source the customer's default (as `wallet.set_default` does).
    #[command(after_help = KEYS_HELP)]
    SetDefault(WalletChangeArgs),
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Rows per key id of every table with sealed secrets, rows still in plaintext
    /// during an upgrade, and which keys are held, missing or no longer needed.
    #[command(after_help = KEYS_HELP)]
    Status {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Re-seal every row not under the active key, in small batches, while workers run.
    /// Resumable: a stopped rotation loses nothing and the next one goes on.
    #[command(after_help = KEYS_HELP)]
    Rotate {
        #[command(flatten)]
        db: DbArgs,
        /// Rows re-sealed per second at most.
        #[arg(long, default_value_t = 500.0, value_parser = positive_rate)]
        rate: f64,
        #[command(flatten)]
        actor: ActorArg,
    },
}

/// One source of one customer's wallet, and where its event goes.
#[derive(Debug, Clone, Args)]
pub struct WalletChangeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// The customer's id, as orders name it (e.g. `kWnEhpRgYD`).
    pub customer_id: String,
    /// The customer payment source's id (10 characters, e.g. `QgDXpwsqDx`; `wallet list`
    /// shows them).
    pub source_id: String,
    #[command(flatten)]
    pub actor: ActorArg,
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters waiting in the dead-letter store, oldest first.
    List {
        #[command(flatten)]
        db: DbArgs,
        /// Show at most this many (the first that match, oldest first).
        #[arg(long, default_value_t = 100, conflicts_with = "all", value_parser = clap::value_parser!(u64).range(1..))]
        limit: u64,
        /// Show every matching dead letter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        filter: DlqFilter,
        /// Continue a listing after this cursor (the last line of a listing names it).
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// Print JSON for scripts (an array; the line on what is not shown goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Show a dead letter in full: headers, properties and body (tokens masked).
    Show {
        #[command(flatten)]
        db: DbArgs,
        /// The message id (every dead letter of that message: one per life), or a row id
        /// as `dlq list` shows it.
        message_id: String,
    },
    /// Count dead letters by error kind, type and failure group, with the oldest and newest.
    Summary {
        #[command(flatten)]
        db: DbArgs,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into the outbox, to their original routing key with attempts reset.
    Replay {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        amqp: AmqpArgs,
        #[command(flatten)]
        select: DlqSelect,
        #[command(flatten)]
        filter: DlqNarrow,
        /// Publish at most this many per second.
        #[arg(long, value_parser = positive_rate)]
        rate: Option<f64>,
        /// Only print what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Who replays, for the audit log.
        #[arg(long, env = "USER", default_value = "unknown", hide_env_values = true)]
        actor: String,
    },
    /// Delete dead letters from the store.
    Purge {
        #[command(flatten)]
        db: DbArgs,
        #[command(flatten)]
        select: DlqSelect,
        #[command(flatten)]
        filter: DlqNarrow,
        /// Only print what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Purge `--all` without asking.
        #[arg(long)]
        yes: bool,
        /// Who purges, for the audit log.
        #[arg(long, env = "USER", default_value = "unknown", hide_env_values = true)]
        actor: String,
    },
}

/// Which dead letters `dlq list` shows: those matching every filter given.
#[derive(Debug, Clone, Args)]
pub struct DlqFilter {
    /// Only this error kind (`malformed`, `order_not_found`, `delivery_limit`, ...).
    #[arg(long)]
    pub error: Option<String>,
    /// Only this message type (e.g. `wallet.save`).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Only this failure group (its key, as `dlq summary` shows it).
    #[arg(long)]
    pub group: Option<String>,
    #[command(flatten)]
    pub narrow: DlqNarrow,
}

/// Filters that narrow any selection of dead letters.
#[derive(Debug, Clone, Args)]
pub struct DlqNarrow {
    /// Only those dead-lettered at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those dead-lettered before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only those of this order.
    #[arg(long)]
    pub order: Option<String>,
    /// Only those of this customer.
    #[arg(long)]
    pub customer: Option<String>,
}

/// Which dead letters a replay or purge takes: exactly one of `--all`, `--id`,
/// `--type`, `--error`, `--group`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct DlqSelect {
    /// Every dead letter.
    #[arg(long)]
    pub all: bool,
    /// The dead letters with these message ids.
    #[arg(long, num_args = 1..)]
    pub id: Vec<String>,
    /// The dead letters of this message type (e.g. `wallet.save`).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The dead letters of this error kind (e.g. `order_not_found`).
    #[arg(long)]
    pub error: Option<String>,
    /// The dead letters of this failure group (its key, as `dlq summary` shows it).
    #[arg(long)]
    pub group: Option<String>,
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text} is not a positive number of messages per second"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct GatewaySimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    pub listen: SocketAddr,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Fraction of requests answered with 503 (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// File holding the signing secret to verify `X-CommerceLayer-Signature` with (or
    /// the secret itself in GATEWAY_SIM_SECRET). Without either, the development secret
    /// `sim-secret`.
    #[arg(long, env = "GATEWAY_SIM_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// The secret itself; accepted with a warning, as the command line is visible to
    /// every user of the machine (prefer GATEWAY_SIM_SECRET or --secret-file).
    #[arg(long, value_name = "SECRET", conflicts_with = "secret_file")]
    pub secret: Option<Secret>,
}

impl GatewaySimArgs {
    /// The signing secret: `--secret`, GATEWAY_SIM_SECRET, its file, or `sim-secret`.
    pub fn secret(&self) -> anyhow::Result<Secret> {
        let from_env =
            crate::secrets::from_env_or_file("GATEWAY_SIM_SECRET", self.secret_file.as_deref())?;
        match (&self.secret, from_env) {
            (Some(_), Some(_)) => anyhow::bail!(
                "--secret and GATEWAY_SIM_SECRET are both given; give the secret one way"
            ),
            (Some(secret), None) => {
                eprintln!(
                    "warning: --secret is visible to every user of this machine (ps, shell \
                     history); prefer GATEWAY_SIM_SECRET or --secret-file FILE"
                );
                Ok(secret.clone())
            }
            (None, from_env) => Ok(from_env.unwrap_or_else(|| Secret::new("sim-secret"))),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub amqp: AmqpArgs,
    /// Messages to publish.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Messages per second; as fast as possible when absent.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fraction of placed orders that ask to save their payment source.
    #[arg(long, default_value_t = 0.5)]
    pub save_ratio: f64,
    /// Gateway id the generated orders pay with.
    #[arg(long, env = "LOADGEN_GATEWAY_ID", default_value = "sim")]
    pub gateway_id: String,
    /// Give up waiting for completions after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Seed for the traffic mix: the same seed publishes the same shape of traffic
    /// (ids stay fresh). Random when absent; the report prints the one used.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the report as one self-contained HTML file (charts of throughput and
    /// latency percentiles second by second, the outcome mix), even when the run fails.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// Messages the demo's load generator publishes.
    #[arg(long, default_value_t = 400)]
    pub count: u64,
}
