//! `run`: wires the store, the committer, the admin server and the broker sessions, and
//! reconnects to the broker until shutdown. Tests and `demo` call the same entry points.

use crate::admin::{self, AdminState};
use crate::broker::consumer::{self, ConsumerSettings, Shared};
use crate::broker::{self, Topology, dlq_depth, relay};
use crate::config::WorkerArgs;
use crate::gateway::{ClientSettings, GatewayClient};
use crate::handlers::{CircuitSettings, Context, GatewayDirectory};
use crate::metrics as m;
use crate::store::outbox::PendingEvent;
use crate::store::retention::{self, RetentionSettings};
use crate::store::{self, Committer};
use backon::BackoffBuilder;
use lapin::options::ConfirmSelectOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Effects per group-commit transaction.
const MAX_COMMIT_BATCH: usize = 64;
/// Group-commit loops running side by side: they mostly wait on round trips, so a few
/// keep Postgres busy while each waits.
const COMMITTERS: usize = 4;

/// A worker started in the background.
pub struct RunningWorker {
    /// Where the admin server listens (useful with port 0).
    pub admin_addr: SocketAddr,
    /// Ends when the worker has shut down.
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// Runs the worker until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(args, shutdown).await?.task.await?
}

/// Migrates, binds the admin server and starts consuming in the background.
pub async fn start(args: WorkerArgs, shutdown: CancellationToken) -> anyhow::Result<RunningWorker> {
    // Handlers hold a connection only for short reads, and commits are batched: a
    // quarter of the prefetch window is plenty, and Postgres connections are scarce.
    let pool_size = args
        .db_pool_size
        .unwrap_or_else(|| (u32::from(args.prefetch) / 4).clamp(6, 24) + COMMITTERS as u32);
    let pool = store::connect_and_migrate(&args.db.database_url, pool_size).await?;
    let broker_up = Arc::new(AtomicBool::new(false));
    let admin_stop = CancellationToken::new();
    let (admin_addr, admin_task) = admin::serve(
        args.admin_addr,
        AdminState {
            pool: pool.clone(),
            broker_up: broker_up.clone(),
            metrics: m::install(),
            token: args.admin_token.clone(),
        },
        admin_stop.clone(),
    )
    .await?;
    // Committed events travel in memory to the relay of the current broker session.
    let (events_committed, committed_events) = mpsc::unbounded_channel();
    let relay_pool = store::relay_pool(&args.db.database_url)?;
    let relay = Relay {
        pool: relay_pool.clone(),
        committed: Arc::new(Mutex::new(committed_events)),
    };
    let gateways = Arc::new(GatewayDirectory::new(pool.clone(), Duration::from_secs(1)));
    let watcher = gateways.watch(shutdown.clone()).await;
    if let Err(err) = &watcher {
        tracing::warn!(error = %err, "cannot watch gateway changes; cached gateways expire after 1 s");
    }
    let shared = Arc::new(Shared {
        handlers: Context {
            pool: pool.clone(),
            gateways,
            gateway: GatewayClient::new(ClientSettings::default())?,
            circuit: CircuitSettings {
                threshold: args.circuit_threshold,
                cool_down: Duration::from_millis(args.circuit_cool_down_ms),
            },
        },
        committer: Committer::spawn(pool.clone(), COMMITTERS, MAX_COMMIT_BATCH, events_committed),
        topology: Topology::new(
            &args.amqp.exchange,
            &args.amqp.queue,
            args.retry_base_ms,
            args.retry_max_ms,
        ),
        settings: ConsumerSettings {
            prefetch: args.prefetch,
            max_attempts: args.max_attempts,
            retry_base_ms: args.retry_base_ms,
            retry_max_ms: args.retry_max_ms,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        },
    });
    let retention = RetentionSettings::from_days(
        args.inbox_retention_days,
        args.order_retention_days,
        Duration::from_millis(args.retention_interval_ms),
    );
    let pruner = retention::spawn(pool.clone(), retention, shutdown.clone());
    let task = tokio::spawn(async move {
        supervise(&args.amqp.amqp_url, shared, relay, broker_up, shutdown).await;
        let _ = pruner.await;
        pool.close().await;
        relay_pool.close().await;
        admin_stop.cancel();
        let _ = admin_task.await;
        tracing::info!("worker stopped");
        Ok(())
    });
    Ok(RunningWorker { admin_addr, task })
}

/// Connects, declares, consumes; on any broker failure, starts over after a backoff.
async fn supervise(
    amqp_url: &str,
    shared: Arc<Shared>,
    relay: Relay,
    broker_up: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut waits = reconnect_backoff();
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            connected = connect(amqp_url, &shared.topology) => connected,
            _ = shutdown.cancelled() => break,
        };
        let connection = match connected {
            Ok(connection) => connection,
            Err(err) => {
                let delay = waits.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %err, delay_ms = delay.as_millis() as u64, "broker unavailable; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        waits = reconnect_backoff();
        broker_up.store(true, Ordering::Relaxed);
        metrics::gauge!(m::BROKER_CONNECTED).set(1.0);
        tracing::info!(queue = %shared.topology.queue, "connected to the broker; consuming");
        if let Err(err) = session(&connection, &shared, &relay, &shutdown).await {
            tracing::warn!(error = %err, "broker session ended");
        }
        broker_up.store(false, Ordering::Relaxed);
        metrics::gauge!(m::BROKER_CONNECTED).set(0.0);
        let _ = connection.close(200, "bye".into()).await;
    }
}

async fn connect(url: &str, topology: &Topology) -> lapin::Result<lapin::Connection> {
    let connection = broker::connect(url, "consumer").await?;
    topology.declare(&connection).await?;
    Ok(connection)
}

/// One connection's life: the consumer session and the outbox relay side by side. The
/// relay outlives the consumer so the events of the last commits are flushed.
async fn session(
    connection: &lapin::Connection,
    shared: &Arc<Shared>,
    relay: &Relay,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let relay_channel = connection.create_channel().await?;
    relay_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let stop_consuming = shutdown.child_token();
    let stop_relay = CancellationToken::new();
    let relay_task = tokio::spawn({
        let (pool, committed, exchange) = (
            relay.pool.clone(),
            relay.committed.clone(),
            shared.topology.exchange.clone(),
        );
        let (stop_relay, stop_consuming) = (stop_relay.clone(), stop_consuming.clone());
        async move {
            let mut committed = committed.lock().await;
            let result =
                relay::run(pool, relay_channel, exchange, &mut committed, stop_relay).await;
            if let Err(err) = &result {
                tracing::warn!(error = %err, "outbox relay lost its channel; restarting the session");
                stop_consuming.cancel();
            }
            result
        }
    });
    let dlq = shared.topology.dead_letter_queue();
    let dlq_depth = dlq_depth::spawn(connection, dlq, dlq_depth::INTERVAL).await?;
    let consumed = consumer::run_session(connection, shared.clone(), stop_consuming).await;
    dlq_depth.abort();
    stop_relay.cancel();
    let relayed = relay_task.await?;
    consumed?;
    relayed?;
    Ok(())
}

fn reconnect_backoff() -> backon::ExponentialBackoff {
    backoff(Duration::from_millis(200), Duration::from_secs(5))
}

/// Endless exponential backoff with jitter between `min` and `max`: waiting for a
/// service (broker, database) to come back.
pub fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// What each session's outbox relay takes over from the previous one.
struct Relay {
    pool: sqlx::PgPool,
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
