//! `run`: wires the store, the committer, the admin server and the broker sessions, and
//! reconnects to the broker until shutdown. Tests and `demo` call the same entry points.

use crate::admin::{self, AdminState};
use crate::broker::consumer;
use crate::broker::intake::{self, Intake};
use crate::broker::nodes::Unanswered;
use crate::broker::shared::{ConsumerSettings, Shared};
use crate::broker::topology::TopologyError;
use crate::broker::{BrokerLink, Node, Nodes, Topology, dlq_depth, relay, scheduler};
use crate::crypto::{DataKeys, Keyring};
use crate::error_chain::ErrorChain;
use crate::gateway::{ClientSettings, GatewayClient};
use crate::handlers::{CircuitSettings, Context, GatewayDirectory};
use crate::metrics as m;
use crate::store::outbox::PendingEvent;
use crate::store::retention::{self, RetentionSettings};
use crate::store::{self, CommitWatch, Committer, CommitterSettings, DbTimeouts, Rules};
use crate::supervisor::Supervisor;
use lapin::options::ConfirmSelectOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod settings;
pub use settings::{AmqpSettings, DbSettings, WorkerSettings};

/// Messages per group-commit transaction at most.
const MAX_COMMIT_BATCH: usize = 64;
/// Postgres connections of the commit loop (it runs one transaction at a time).
const COMMIT_CONNECTIONS: u32 = 1;

/// How long a failed worker keeps answering `/readyz` (503, with the cause) before it
/// exits.
const FAILED_LINGER: Duration = Duration::from_secs(2);

/// A worker started in the background.
pub struct RunningWorker {
    /// Where the admin server listens (useful with port 0).
    pub admin_addr: SocketAddr,
    /// Where the metrics-only listener listens, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    /// Ends when the worker has shut down.
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the worker until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(args: WorkerSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(args, shutdown).await?.task.await?
}

/// Migrates, binds the admin server and starts consuming in the background.
pub async fn start(
    args: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningWorker> {
    let (pools, keys) = Pools::open(&args).await?;
    let commits = CommitWatch::default();
    let link = BrokerLink::default();
    let supervisor = Supervisor::default();
    // Committed events travel in memory to the relay of the current broker session.
    let (events_committed, committed_events) = mpsc::unbounded_channel();
    let admin_state = AdminState {
        pool: pools.main.clone(),
        broker: link.clone(),
        supervisor: supervisor.clone(),
        metrics: m::install(),
        token: args.admin_token.clone(),
        clock: args.clock.clone(),
        commits: commits.clone(),
        commit_stall: Duration::from_secs(args.commit_stall_secs),
        committed: events_committed.clone(),
        keys: keys.clone(),
    };
    let admin = AdminServers::serve(&args, admin_state).await?;
    let relay = Relay {
        pool: pools.relay.clone(),
        keys: keys.clone(),
        committed: Arc::new(Mutex::new(committed_events)),
    };
    let intake = Intake {
        pool: pools.main.clone(),
        keys: keys.clone(),
        committed: events_committed.clone(),
    };
    let gateways = watch_gateways(&pools.main, &keys, &supervisor, &shutdown).await;
    let shared = Arc::new(Shared {
        handlers: handler_context(&args, &pools.main, keys.clone(), gateways)?,
        committer: spawn_committer(&args, &pools.commit, keys, &supervisor, events_committed),
        commits,
        topology: topology(&args),
        settings: consumer_settings(&args),
        supervisor: supervisor.clone(),
    });
    let pruner = spawn_pruner(&args, &pools.main, &supervisor, &shutdown);
    let (admin_addr, metrics_addr) = (admin.addr, admin.metrics_addr());
    let nodes = Nodes::parse(&args.amqp.amqp_url);
    let consuming = reconnect_loop(nodes, shared, relay, intake, link, shutdown.clone());
    let closing = Closing {
        pools,
        pruner,
        admin,
    };
    let task = tokio::spawn(run_until_stopped(consuming, supervisor, shutdown, closing));
    Ok(RunningWorker {
        admin_addr,
        metrics_addr,
        task,
    })
}

/// The worker's Postgres pools.
struct Pools {
    /// The handlers', the admin server's and the dead-letter intake's.
    main: sqlx::PgPool,
    /// The commit loop's own: it runs one transaction at a time.
    commit: sqlx::PgPool,
    /// The outbox relay's.
    relay: sqlx::PgPool,
}

impl Pools {
    /// The pools (the database created and migrated on the way) and the keyring.
    async fn open(args: &WorkerSettings) -> anyhow::Result<(Self, Keyring)> {
        let url = &args.db.database_url;
        let timeouts = DbTimeouts {
            statement: Duration::from_millis(args.db_statement_timeout_ms),
            lock: Duration::from_millis(args.db_lock_timeout_ms),
        };
        // Handlers hold a connection only for short reads, and commits are batched: a
        // quarter of the prefetch window is plenty, and Postgres connections are scarce.
        // The commit loop has a connection of its own.
        let pool_size = args
            .db_pool_size
            .unwrap_or_else(|| (u32::from(args.prefetch) / 4).clamp(6, 24) + COMMIT_CONNECTIONS);
        let (main, keys) = open_store(args, pool_size - COMMIT_CONNECTIONS, timeouts).await?;
        let pools = Self {
            main,
            commit: store::commit_pool(url, COMMIT_CONNECTIONS, timeouts)?,
            relay: store::relay_pool(url, timeouts)?,
        };
        Ok((pools, keys))
    }

    async fn close(&self) {
        self.main.close().await;
        self.commit.close().await;
        self.relay.close().await;
    }
}

/// The gateway directory (cached entries expire after a second) and its watcher, which
/// drops a cached gateway as soon as it changes.
async fn watch_gateways(
    pool: &sqlx::PgPool,
    keys: &Keyring,
    supervisor: &Supervisor,
    shutdown: &CancellationToken,
) -> Arc<GatewayDirectory> {
    let gateways = Arc::new(GatewayDirectory::new(
        pool.clone(),
        keys.clone(),
        Duration::from_secs(1),
    ));
    match gateways.watch(shutdown.clone()).await {
        Ok(watcher) => drop(supervisor.spawn("gateway-watcher", watcher)),
        Err(err) => {
            tracing::warn!(error = %ErrorChain(&err), "cannot watch gateway changes; cached gateways expire after 1 s");
        }
    }
    gateways
}

/// What the handlers decide with: the pool, the keys, the gateways and their client.
fn handler_context(
    args: &WorkerSettings,
    pool: &sqlx::PgPool,
    keys: Keyring,
    gateways: Arc<GatewayDirectory>,
) -> anyhow::Result<Context> {
    Ok(Context {
        pool: pool.clone(),
        keys,
        gateways,
        gateway: GatewayClient::new(ClientSettings::default())?,
        circuit: CircuitSettings {
            threshold: args.circuit_threshold,
            cool_down: Duration::from_millis(args.circuit_cool_down_ms),
        },
    })
}

/// The commit loop, on its own pool; it hands what it committed to the relay.
fn spawn_committer(
    args: &WorkerSettings,
    commit_pool: &sqlx::PgPool,
    keys: Keyring,
    supervisor: &Supervisor,
    events_committed: mpsc::UnboundedSender<Vec<PendingEvent>>,
) -> Committer {
    let settings = CommitterSettings {
        max_batch: MAX_COMMIT_BATCH,
        rules: Rules {
            clock: args.clock.clone(),
            max_sources_per_customer: args.max_sources_per_customer,
            keys,
        },
    };
    Committer::spawn(commit_pool.clone(), settings, supervisor, events_committed)
}

fn topology(args: &WorkerSettings) -> Topology {
    Topology::new(
        &args.amqp.exchange,
        &args.amqp.queue,
        args.retry_base_ms,
        args.retry_max_ms,
    )
}

fn consumer_settings(args: &WorkerSettings) -> ConsumerSettings {
    ConsumerSettings {
        prefetch: args.prefetch,
        max_attempts: args.max_attempts,
        retry_base_ms: args.retry_base_ms,
        retry_max_ms: args.retry_max_ms,
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
    }
}

/// The retention pruner, until shutdown.
fn spawn_pruner(
    args: &WorkerSettings,
    pool: &sqlx::PgPool,
    supervisor: &Supervisor,
    shutdown: &CancellationToken,
) -> JoinHandle<Option<()>> {
    let retention = RetentionSettings::from_days(
        args.inbox_retention_days,
        args.order_retention_days,
        Duration::from_millis(args.retention_interval_ms),
    )
    .keeping_dead_letters(args.dead_letter_retention_days);
    retention::spawn(pool.clone(), retention, supervisor, shutdown.clone())
}

/// The worker's life in the background: consumes until shutdown or until an internal
/// task dies, then closes everything and says why it stopped.
async fn run_until_stopped(
    consuming: impl Future<Output = Option<String>>,
    supervisor: Supervisor,
    shutdown: CancellationToken,
    closing: Closing,
) -> anyhow::Result<()> {
    // A dead internal task ends the worker: its messages go back to the broker
    // (nothing can commit them here any more) and `run` reports the failure.
    let failure = tokio::select! {
        fatal = consuming => fatal,
        () = supervisor.failed() => {
            shutdown.cancel();
            supervisor.failure()
        }
    };
    closing.close(failure.is_some()).await;
    match failure {
        Some(failure) => Err(anyhow::anyhow!(failure)),
        None => {
            tracing::info!("worker stopped");
            Ok(())
        }
    }
}

/// The admin server and, when `WALLET_METRICS_ADDR` is set, the metrics-only listener.
struct AdminServers {
    addr: SocketAddr,
    task: JoinHandle<()>,
    metrics: Option<(SocketAddr, JoinHandle<()>)>,
    /// Stops both.
    stop: CancellationToken,
}

impl AdminServers {
    async fn serve(args: &WorkerSettings, state: AdminState) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let (addr, task) = admin::serve(args.admin_addr, state.clone(), stop.clone()).await?;
        let metrics = match args.metrics_addr {
            Some(addr) => Some(admin::serve_probes(addr, state, stop.clone()).await?),
            None => None,
        };
        Ok(Self {
            addr,
            task,
            metrics,
            stop,
        })
    }

    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Some((_, task)) = self.metrics {
            let _ = task.await;
        }
    }
}

/// What a stopping worker closes, once consuming has ended.
struct Closing {
    pools: Pools,
    pruner: JoinHandle<Option<()>>,
    admin: AdminServers,
}

impl Closing {
    /// The pruner and the pools first; the admin server last, after a failed worker
    /// lingered long enough for a probe or a person to read why on `/readyz`.
    async fn close(self, failed: bool) {
        let _ = self.pruner.await;
        self.pools.close().await;
        if failed {
            tokio::time::sleep(FAILED_LINGER).await;
        }
        self.admin.stop().await;
    }
}

/// The pool (the database created and migrated, plaintext secrets of an earlier version
/// sealed) and the keyring. Refuses, in one line, keys that cannot open what is stored.
async fn open_store(
    args: &WorkerSettings,
    connections: u32,
    timeouts: DbTimeouts,
) -> anyhow::Result<(sqlx::PgPool, Keyring)> {
    let data_keys = match &args.keys {
        Some(keys) => keys.clone(),
        None => DataKeys::required_from_env()?,
    };
    let url = &args.db.database_url;
    let pool =
        store::connect_and_migrate_with(url, connections, Some(&data_keys), timeouts).await?;
    store::keys::check_held(&pool, &data_keys).await?;
    let keys = store::keys::keyring(&pool, data_keys).await?;
    Ok((pool, keys))
}

/// Connects, declares, consumes; on any broker failure, starts over after a backoff.
/// With several nodes in `AMQP_URL`, each attempt goes round the list starting after the
/// node that failed last, so the worker moves on to the next node that answers. Returns
/// the cause when the worker cannot go on at all (the queues exist with other
/// arguments: no retry fixes that).
async fn reconnect_loop(
    nodes: Nodes,
    shared: Arc<Shared>,
    relay: Relay,
    intake: Intake,
    link: BrokerLink,
    shutdown: CancellationToken,
) -> Option<String> {
    let mut waits = reconnect_backoff();
    let mut first = 0;
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            connected = connect(&nodes, first, &shared.topology) => connected,
            _ = shutdown.cancelled() => break,
        };
        let (connection, node) = match connected {
            Ok(connected) => connected,
            Err(err) if is_mismatch(&err) => {
                tracing::error!(
                    error = format!("{err:#}"),
                    "the broker's queues differ from this worker's"
                );
                shutdown.cancel();
                return Some(format!("{err:#}"));
            }
            Err(err) => {
                let delay = waits.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(
                    error = format!("{err:#}"),
                    delay_ms = delay.as_millis() as u64,
                    "broker unavailable; reconnecting"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        waits = reconnect_backoff();
        first = node.index() + 1;
        link.connected(&node);
        metrics::gauge!(m::BROKER_CONNECTED).set(1.0);
        tracing::info!(queue = %shared.topology.queue, node = %node, "connected to the broker; consuming");
        if let Err(err) = session(&connection, &shared, &relay, &intake, &shutdown).await {
            tracing::warn!(error = format!("{err:#}"), node = %node, "broker session ended");
        }
        link.disconnected();
        metrics::gauge!(m::BROKER_CONNECTED).set(0.0);
        let _ = connection.close(200, "bye".into()).await;
    }
    None
}

/// Whether connecting failed because a queue exists with other arguments.
fn is_mismatch(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<TopologyError>(),
        Some(TopologyError::Mismatch { .. })
    )
}

/// The first node from position `first` on that accepts a connection and the topology:
/// a node that answers but cannot declare (say, cut off from the majority) is passed
/// over like one that does not answer.
async fn connect(
    nodes: &Nodes,
    first: usize,
    topology: &Topology,
) -> anyhow::Result<(lapin::Connection, Node)> {
    let mut unanswered = Unanswered::default();
    // Named after the queue, so ops (and tests) can tell one worker's connections apart.
    let role = format!("consumer of {}", topology.queue);
    for node in nodes.starting_at(first) {
        let declared = async {
            let connection = node.connect(&role).await?;
            match topology.declare(&connection).await {
                Ok(()) => Ok(connection),
                Err(err) => {
                    let _ = connection.close(200, "bye".into()).await;
                    Err(anyhow::Error::new(err))
                }
            }
        };
        match declared.await {
            Ok(connection) => return Ok((connection, node)),
            Err(err) if is_mismatch(&err) => return Err(err),
            Err(err) => unanswered.push(&node, &err.context("cannot declare the topology")),
        }
    }
    Err(unanswered.into_error())
}

/// One connection's life: the consumer session, the dead-letter intake and the outbox
/// relay side by side. The relay outlives the other two so the events of their last
/// commits are flushed.
async fn session(
    connection: &lapin::Connection,
    shared: &Arc<Shared>,
    relay: &Relay,
    intake: &Intake,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let relay_channel = connection.create_channel().await?;
    relay_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let stop_consuming = shutdown.child_token();
    let stop_relay = CancellationToken::new();
    let relay_task = shared.supervisor.spawn("relay", {
        let (pool, keys, committed, exchange) = (
            relay.pool.clone(),
            relay.keys.clone(),
            relay.committed.clone(),
            shared.topology.exchange.clone(),
        );
        let (stop_relay, stop_consuming) = (stop_relay.clone(), stop_consuming.clone());
        async move {
            let mut committed = committed.lock().await;
            let result =
                relay::run(pool, keys, relay_channel, exchange, &mut committed, stop_relay).await;
            if let Err(err) = &result {
                tracing::warn!(error = %ErrorChain(err), "outbox relay lost its channel; restarting the session");
                stop_consuming.cancel();
            }
            result
        }
    });
    let dlq = shared.topology.dead_letter_queue();
    let dlq_depth = dlq_depth::spawn(connection, dlq.clone(), dlq_depth::INTERVAL).await?;
    let stop_scheduler = CancellationToken::new();
    let scheduler_task =
        spawn_scheduler(connection, shared, &stop_scheduler, &stop_consuming).await?;
    let intake_task = spawn_intake(connection, shared, intake, dlq, &stop_consuming).await?;
    let consumed = consumer::run_session(connection, shared.clone(), stop_consuming.clone()).await;
    // The consumer may have ended on its own (its channel failed): the intake too.
    stop_consuming.cancel();
    let ingested = intake_task.await?;
    dlq_depth.abort();
    stop_scheduler.cancel();
    let _ = scheduler_task.await;
    stop_relay.cancel();
    let relayed = relay_task.await?;
    consumed?;
    // `None`: a task panicked; the supervisor is stopping the worker.
    ingested.transpose()?;
    relayed.transpose()?;
    Ok(())
}

/// The session's delayed-retry scheduler, on a confirm channel of its own; if it loses
/// that channel, the session ends and the next one starts a new scheduler.
async fn spawn_scheduler(
    connection: &lapin::Connection,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
    stop_consuming: &CancellationToken,
) -> lapin::Result<JoinHandle<Option<()>>> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (pool, keys) = (shared.handlers.pool.clone(), shared.handlers.keys.clone());
    let queue = shared.topology.queue.clone();
    let (stop, stop_consuming) = (stop.clone(), stop_consuming.clone());
    Ok(shared.supervisor.spawn("scheduler", async move {
        scheduler::run(pool, keys, channel, queue, stop.clone()).await;
        if !stop.is_cancelled() {
            tracing::warn!("the retry scheduler lost its channel; restarting the session");
            stop_consuming.cancel();
        }
    }))
}

/// Starts the intake of `dlq` on a channel of its own. If it fails, the session starts
/// over (like a relay that lost its channel): dead letters must not pile up unread.
async fn spawn_intake(
    connection: &lapin::Connection,
    shared: &Shared,
    intake: &Intake,
    dlq: String,
    stop: &CancellationToken,
) -> lapin::Result<JoinHandle<Option<lapin::Result<()>>>> {
    let channel = connection.create_channel().await?;
    let (intake, stop) = (intake.clone(), stop.clone());
    Ok(shared.supervisor.spawn("intake", async move {
        let result = intake::run(channel, &dlq, &intake, stop.clone()).await;
        if let Err(err) = &result {
            tracing::warn!(error = %ErrorChain(err), queue = %dlq, "the dead-letter intake lost its channel; restarting the session");
            stop.cancel();
        }
        result
    }))
}

fn reconnect_backoff() -> backon::ExponentialBackoff {
    crate::backoff::endless(Duration::from_millis(200), Duration::from_secs(5))
}

/// What each session's outbox relay takes over from the previous one.
struct Relay {
    pool: sqlx::PgPool,
    keys: Keyring,
    committed: Arc<Mutex<mpsc::UnboundedReceiver<Vec<PendingEvent>>>>,
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
