//! `demo`: the whole product once, on local Postgres and RabbitMQ with no set-up. It
//! serves a gateway-sim in-process, registers it as gateway `sim`, runs the worker and a
//! short load test, adds a malformed message and a foreign attach so a dead letter and a
//! refusal show, stops the worker gracefully and summarises. Counts are of this run only
//! (its own message ids), so leftovers from earlier runs don't skew it.

use crate::crypto::DataKeys;
use crate::domain::Secret;
use crate::store::dead_letters::query;
use crate::store::{self, gateways};
use crate::tools::gateway_sim::{self as sim, SimConfig, SimStats};
use crate::tools::loadgen::{self, LoadgenConfig, Message, Report, Session};
use crate::worker::{self, AmqpSettings, WorkerSettings};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The gateway the demo's orders pay with.
const GATEWAY_ID: &str = "sim";
/// The sim's answer time: a little, like a real gateway nearby.
const SIM_LATENCY: Duration = Duration::from_millis(2);
/// How long steps that should take well under a second may take on a slow machine.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the demo with `worker`'s settings (its keys and admin address are the demo's
/// own when needed), `count` load-test messages, and prints the summary.
pub async fn run(mut worker: WorkerSettings, count: u64) -> anyhow::Result<()> {
    let amqp = worker.amqp.clone();
    // Fail in a second with a clear line, not after the readiness wait.
    let (connection, _node) = crate::broker::connect_any(&amqp.amqp_url, "demo")
        .await
        .context("cannot reach RabbitMQ at AMQP_URL")?;
    connection.close(200, "checked".into()).await?;
    let secret = Secret::new(format!("demo_{}", uuid::Uuid::new_v4().simple()));
    let sim = DemoSim::serve(secret.clone()).await?;
    let key_file = prepare(&mut worker, sim.addr, &secret).await?;

    let shutdown = CancellationToken::new();
    let database_url = worker.db.database_url.clone();
    let running = worker::start(worker, shutdown.clone()).await?;
    let outcome = exercise(&amqp, &database_url, running.admin_addr, count).await;
    shutdown.cancel();
    running.task.await??;
    let stats = sim.stop().await?;

    let (load, extras, dead) = outcome?;
    print_summary(&amqp, running.admin_addr, &load, &extras, &dead, &stats);
    if let Some(path) = key_file {
        println!(
            "  (secrets were sealed with a key the demo keeps for itself in {}: for the demo only; \
             `run` takes its keys from WALLET_ENCRYPTION_KEYS)",
            path.display()
        );
    }
    if !load.is_complete() || !extras.is_complete() {
        bail!(
            "{} completions missing; see the summary above",
            load.missing + extras.missing
        );
    }
    Ok(())
}

/// The demo's gateway-sim, served in-process on a free port.
struct DemoSim {
    addr: SocketAddr,
    stats: Arc<SimStats>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl DemoSim {
    async fn serve(secret: Secret) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let config = SimConfig {
            latency: SIM_LATENCY,
            error_rate: 0.0,
            secret,
        };
        let (stats, stop) = (Arc::new(SimStats::default()), CancellationToken::new());
        let task = tokio::spawn(sim::serve_with_stats(
            listener,
            config,
            stats.clone(),
            stop.clone().cancelled_owned(),
        ));
        Ok(Self {
            addr,
            stats,
            stop,
            task,
        })
    }

    /// Stops serving; what it counted.
    async fn stop(self) -> anyhow::Result<Arc<SimStats>> {
        self.stop.cancel();
        self.task.await??;
        Ok(self.stats)
    }
}

/// Readies the store and `worker` for the demo: the keys (the demo's own when the
/// environment has none; returns their file), the sim registered as gateway `sim` with
/// its circuit closed, and a free admin port when the configured one is taken.
async fn prepare(
    worker: &mut WorkerSettings,
    sim_addr: SocketAddr,
    secret: &Secret,
) -> anyhow::Result<Option<PathBuf>> {
    let (data_keys, key_file) = demo_keys()?;
    worker.keys = Some(data_keys.clone());
    let pool = store::connect_and_migrate(&worker.db.database_url, 2, Some(&data_keys)).await?;
    store::keys::check_held(&pool, &data_keys).await?;
    let keys = store::keys::keyring(&pool, data_keys).await?;
    let token_url = format!("http://{sim_addr}/token");
    gateways::upsert(&pool, &keys, GATEWAY_ID, &token_url, secret, true)
        .await
        .context("cannot register the demo gateway")?;
    // A circuit left open by an earlier run must not hold this one back.
    gateways::reset_circuit(&pool, GATEWAY_ID).await?;
    pool.close().await;
    if tokio::net::TcpListener::bind(worker.admin_addr)
        .await
        .is_err()
    {
        worker.admin_addr.set_port(0);
    }
    Ok(key_file)
}

/// The keys of the environment, else the demo's own: a key generated on first use and
/// kept, readable by the user only, in `$XDG_STATE_HOME/wallet-worker/demo-encryption-keys`
/// (`~/.local/state/...` by default) for later demos on the same database. For the demo
/// only. Returns the file when the demo's own key is used.
fn demo_keys() -> anyhow::Result<(DataKeys, Option<PathBuf>)> {
    if let Some(keys) = DataKeys::from_env()? {
        return Ok((keys, None));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .context(
            "neither WALLET_ENCRYPTION_KEYS nor HOME is set: the demo has nowhere to keep its key",
        )?;
    let path = state.join("wallet-worker").join("demo-encryption-keys");
    if !path.exists() {
        write_private(&path, &DataKeys::generate_entry("demo"))
            .with_context(|| format!("cannot keep the demo's key in {}", path.display()))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the demo's key from {}", path.display()))?;
    let keys = DataKeys::parse(&Secret::new(text))
        .with_context(|| format!("the demo's key file {} is damaged", path.display()))?;
    Ok((keys, Some(path)))
}

/// Creates `path` (and its directory) readable by the user only; an existing file (a
/// concurrent demo's) is kept.
fn write_private(path: &Path, text: &Secret) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match file {
        Ok(mut file) => writeln!(file, "{}", text.expose()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// Dead letters of this run in the dead-letter store, by error kind.
struct DeadLetters {
    ours: BTreeMap<String, u64>,
}

/// Steps (d) and (e): the load test, then a malformed message and a foreign attach.
async fn exercise(
    amqp: &AmqpSettings,
    database_url: &str,
    admin: SocketAddr,
    count: u64,
) -> anyhow::Result<(Report, Report, DeadLetters)> {
    wait_until_ready(admin).await?;
    let config = LoadgenConfig {
        amqp_url: amqp.amqp_url.clone(),
        exchange: amqp.exchange.clone(),
        count,
        rate: None,
        save_ratio: 0.5,
        gateway_id: GATEWAY_ID.into(),
        timeout: Duration::from_secs(60),
        seed: rand::random(),
    };
    let load = loadgen::run(config, true).await?;

    let run = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let session = Session::open(&amqp.amqp_url, &amqp.exchange, &run).await?;
    // Someone else's source: the worker answers `not_found`, revealing nothing.
    let source = load
        .saved_sources
        .first()
        .map_or("QgDXpwsqDx", |s| s.source_id.as_str());
    let data = loadgen::attach_data(
        &format!("{run}-order"),
        "pending",
        &format!("{run}-intruder"),
        source,
    );
    let attach = Message::envelope(&format!("{run}-attach"), "wallet.attach", &run, data, true);
    session.publish(&attach).await?;
    let malformed = Message::malformed(
        &format!("{run}-malformed"),
        "order.placed",
        b"{\"id\": oops",
    );
    session.publish(&malformed).await?;
    let extras = session.finish(PATIENCE, 0).await?;

    // The malformed message announces nothing to wait for: wait for its stored row.
    let pool = store::pool(database_url, 1)?;
    let prefixes = [load.run_id.clone(), run];
    let deadline = Instant::now() + PATIENCE;
    let mut ours = query::by_error_of_ids(&pool, &prefixes).await?;
    while ours.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ours = query::by_error_of_ids(&pool, &prefixes).await?;
    }
    pool.close().await;
    Ok((load, extras, DeadLetters { ours }))
}

/// The worker is ready once its admin server says the broker and database are up
/// (and so the queue is declared and bound).
async fn wait_until_ready(admin: SocketAddr) -> anyhow::Result<()> {
    let url = format!("http://{admin}/readyz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(&url).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the worker was not ready after {} s: are RabbitMQ and Postgres running?",
        PATIENCE.as_secs()
    )
}

/// What the run did, for people: counts of this run only, then where to look next.
fn print_summary(
    amqp: &AmqpSettings,
    admin: SocketAddr,
    load: &Report,
    extras: &Report,
    dead: &DeadLetters,
    sim: &SimStats,
) {
    println!();
    println!(
        "wallet-worker demo: {} messages through queue {} on exchange {} (admin was http://{admin})",
        load.published + extras.published,
        amqp.queue,
        amqp.exchange
    );
    print_outcomes(load, extras, dead);
    print_calls_and_speed(load, extras, sim);
    print_next_steps(load);
}

/// Saves, attaches, refusals by reason and dead letters by kind.
fn print_outcomes(load: &Report, extras: &Report, dead: &DeadLetters) {
    let completed = |kind: &str| load.completed.get(kind).copied().unwrap_or(0);
    let mut refusals = load.refusals.clone();
    for (reason, n) in &extras.refusals {
        *refusals.entry(reason.clone()).or_default() += n;
    }
    println!(
        "  wallets saved   {:>6}  {} new sources, {} reused (the same card again)",
        completed("wallet.saved"),
        load.saved_created,
        load.saved_reused
    );
    println!(
        "  attached        {:>6}  saved sources attached to pending orders",
        completed("wallet.attached")
    );
    println!("  refusals        {:>6}", refusals.values().sum::<u64>());
    for (reason, n) in &refusals {
        println!("    {reason:<36}{n:>6}");
    }
    let kinds: Vec<String> = dead.ours.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "  dead letters    {:>6}  in the dead-letter store from this run: {}",
        dead.ours.values().sum::<u64>(),
        if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(", ")
        }
    );
}

/// Gateway calls, silent orders, anything missing, throughput and latency.
fn print_calls_and_speed(load: &Report, extras: &Report, sim: &SimStats) {
    println!(
        "  gateway calls   {:>6}  to gateway-sim ({} answered from its idempotency store, {} bad signatures)",
        sim.requests(),
        sim.replays(),
        sim.signature_failures()
    );
    println!(
        "  no event        {:>6}  orders placed without the save flag (recorded silently)",
        load.unacknowledged_by_design
    );
    if load.missing + extras.missing > 0 {
        println!(
            "  MISSING         {:>6}  completions never arrived",
            load.missing + extras.missing
        );
    }
    println!(
        "  throughput      {:>6.0}  completions/s over {:.2} s",
        load.throughput_per_sec, load.window_seconds
    );
    let l = load.latency_ms;
    println!(
        "  latency ms      p50 {}  p90 {}  p99 {}  max {}",
        l.p50, l.p90, l.p99, l.max
    );
}

/// The commands that show what the demo left behind.
fn print_next_steps(load: &Report) {
    println!();
    println!("Look next:");
    if let Some(saved) = load.saved_sources.first() {
        println!(
            "  wallet-worker wallet list {}      # a customer's wallet",
            saved.customer_id
        );
    }
    println!("  wallet-worker dlq list                   # the dead letters, with why");
    println!(
        "  wallet-worker gateway list               # gateway `sim` points at the demo's sim (now stopped)"
    );
}
