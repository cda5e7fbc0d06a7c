//! Postgres: the store of record. All SQL lives in this module's files.

pub mod audit;
pub mod batch;
pub mod committer;
pub mod dead_letters;
pub mod delayed;
pub mod effects;
pub mod gateways;
pub mod inbox;
pub mod keys;
pub mod migrations;
pub mod orders;
pub mod outbox;
pub mod plaintext;
pub mod retention;
pub mod unfinished;
pub mod wallet;
pub mod watch;

pub use committer::{CommitError, Committed, Committer, CommitterSettings, commit_now};
pub use effects::Rules;
pub use watch::CommitWatch;

use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;

pub use migrations::MIGRATOR;

/// `sqlx::FromRow` for a struct whose fields are named as its columns. The derive would
/// bring sqlx's proc-macro crate, and with it a second build of the Postgres driver,
/// into every build of the worker.
macro_rules! from_row {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> for $name {
            fn from_row(row: &'r sqlx::postgres::PgRow) -> sqlx::Result<Self> {
                use sqlx::Row as _;
                Ok(Self { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
}
pub(crate) use from_row;

/// How long one statement, and one wait for a lock, may take on the worker's
/// connections (docs/operations.md, bounded waits). A statement that runs out of time
/// fails, and the delivery waits and tries again as in an outage: nothing waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbTimeouts {
    pub statement: Duration,
    pub lock: Duration,
}

impl Default for DbTimeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_secs(15),
            lock: Duration::from_secs(5),
        }
    }
}

impl DbTimeouts {
    fn settings(&self) -> [(&'static str, String); 2] {
        [
            (
                "statement_timeout",
                format!("{}ms", self.statement.as_millis()),
            ),
            ("lock_timeout", format!("{}ms", self.lock.as_millis())),
        ]
    }
}

/// [`connect_and_migrate_with`] the default timeouts.
pub async fn connect_and_migrate(
    url: &str,
    max_connections: u32,
    keys: Option<&crate::crypto::DataKeys>,
) -> anyhow::Result<PgPool> {
    connect_and_migrate_with(url, max_connections, keys, DbTimeouts::default()).await
}

/// Connects to `url`, creating the database when it does not exist yet, and applies
/// the migrations (docs/interface.md, command line: `migrate`, `run` and `demo` do this),
/// sealing on the way the secrets an earlier version stored in plaintext, with `keys`
/// ([`migrations::run`]). Migrations run on connections of their own without the
/// statement timeout: a migration, or sealing a large table, may rightly take longer
/// than any message's statement.
///
/// A Postgres that is up but turns connections away for now (too many clients, still
/// starting) is waited for, up to [`BUSY_WAIT`]; an unreachable address or a refused
/// login is an error at once.
pub async fn connect_and_migrate_with(
    url: &str,
    max_connections: u32,
    keys: Option<&crate::crypto::DataKeys>,
    timeouts: DbTimeouts,
) -> anyhow::Result<PgPool> {
    let_in(|| create_and_migrate(url, max_connections, keys, timeouts)).await
}

/// Runs `connect` again while Postgres turns connections away for now, up to
/// [`BUSY_WAIT`], each refusal logged; any other error is returned at once.
async fn let_in<T, Fut>(connect: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<T>>,
{
    use backon::Retryable;
    let waits = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(BUSY_WAIT));
    connect
        .retry(waits)
        .when(turned_away)
        .notify(|err, wait| {
            tracing::warn!(
                error = format!("{err:#}"),
                ?wait,
                "Postgres turns connections away for now; trying again"
            );
        })
        .await
}

/// How long start-up waits for a Postgres that turns connections away: long enough for
/// a burst of connections elsewhere to pass, short enough to fail a start that will
/// not succeed.
const BUSY_WAIT: Duration = Duration::from_secs(30);

/// Whether `err` is Postgres refusing connections for now: too many of them (SQLSTATE
/// class 53) or not accepting any yet (57P03, starting up). A pool retries those two
/// itself until its acquire timeout and then reports only that it timed out; an
/// address that does not answer fails a pool at once, so a timeout means "turned away".
fn turned_away(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|code| code.starts_with("53") || code == "57P03"),
            Some(sqlx::Error::PoolTimedOut) => true,
            _ => false,
        })
}

async fn create_and_migrate(
    url: &str,
    max_connections: u32,
    keys: Option<&crate::crypto::DataKeys>,
    timeouts: DbTimeouts,
) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let trusted = crate::tls::postgres_url(url);
    if !Postgres::database_exists(&trusted)
        .await
        .context("cannot reach Postgres at DATABASE_URL")?
    {
        // Two processes may race to create it; the loser sees "already exists".
        if let Err(err) = Postgres::create_database(&trusted).await
            && !Postgres::database_exists(&trusted).await.unwrap_or(false)
        {
            return Err(err).context("cannot create the database named in DATABASE_URL");
        }
    }
    let unbounded = pool_options(2).connect_lazy_with(base_options(url)?);
    let migrated = migrations::run(&unbounded, keys).await;
    unbounded.close().await;
    migrated?;
    pool_with(url, max_connections, timeouts, &[])
}

/// Connects to an existing database whose schema is up to date, changing nothing:
/// read-only commands never create or migrate, so a mistyped `DATABASE_URL` is an
/// error, not a new empty database.
pub async fn connect_existing(url: &str) -> anyhow::Result<PgPool> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or_default();
    connect_existing_since(url, latest).await
}

/// [`connect_existing`] for a schema at migration `version` or later (`keys status`
/// also reads a database whose upgrade is under way).
pub async fn connect_existing_since(url: &str, version: i64) -> anyhow::Result<PgPool> {
    let_in(|| open_existing(url, version)).await
}

async fn open_existing(url: &str, version: i64) -> anyhow::Result<PgPool> {
    use anyhow::{Context, bail};
    let name = connect_options(url)?
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    if !Postgres::database_exists(&crate::tls::postgres_url(url))
        .await
        .context("cannot reach Postgres at DATABASE_URL")?
    {
        bail!("database {name} does not exist; `wallet-worker migrate` creates it");
    }
    // A command's later queries may open the pool's second connection: on a Postgres
    // that turns connections away for now, they wait as long as opening did.
    let pool = pool_options(2)
        .acquire_timeout(BUSY_WAIT)
        .connect_lazy_with(pool_connect_options(url, DbTimeouts::default(), &[])?);
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE success",
    )
    .fetch_all(&pool)
    .await
    .map_err(|err| match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
            anyhow::anyhow!(
                "database {name} has no wallet-worker schema; `wallet-worker migrate` creates it"
            )
        }
        _ => anyhow::Error::new(err).context("cannot read the database schema version"),
    })?;
    // Every migration up to `version`, not only the latest: one merged in with a lower
    // number (0007, the dead-letter store) is missing from a database that a version
    // without it migrated up to 0009.
    if MIGRATOR
        .iter()
        .any(|m| m.version <= version && !applied.contains(&m.version))
    {
        bail!(
            "the schema of database {name} is older than this wallet-worker; run `wallet-worker migrate`"
        );
    }
    Ok(pool)
}

/// A lazily connecting pool: a worker starts (and reports not ready) while Postgres is down.
pub fn pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    pool_with(url, max_connections, DbTimeouts::default(), &[])
}

/// The commit loops' pool. Their statements are set-based: keys and arrays bound as
/// parameters, and every lookup by primary key or index. Postgres would plan such a
/// statement afresh on every execution (the array's length changes its estimate); one
/// generic plan per connection is as good and saves that work on every batch.
///
/// Its connection is not pinged before each transaction (sqlx's default): that would be
/// one more round trip per batch, and a connection that broke meanwhile fails the
/// batch's first statement instead, an error the commit path already treats as
/// transient (the messages wait and are tried again).
pub fn commit_pool(
    url: &str,
    max_connections: u32,
    timeouts: DbTimeouts,
) -> anyhow::Result<PgPool> {
    let options =
        pool_connect_options(url, timeouts, &[("plan_cache_mode", "force_generic_plan")])?;
    Ok(pool_options(max_connections)
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// The outbox relay's pool. Its writes only forget published events; one lost in a
/// crash means the event is published again (at least once), so they need not wait
/// for the WAL flush.
pub fn relay_pool(url: &str, timeouts: DbTimeouts) -> anyhow::Result<PgPool> {
    pool_with(url, 2, timeouts, &[("synchronous_commit", "off")])
}

/// Connection options from `url`. Without an explicit `sslmode`, sqlx would `prefer`
/// TLS; on loopback that buys nothing and costs a quarter of the worker's database CPU,
/// so loopback connections default to plain TCP. An explicit `sslmode` always wins, and
/// `verify-full` checks the server against the process's trust (`crate::tls`).
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(&crate::tls::postgres_url(url))
        .map_err(|e| anyhow::anyhow!("invalid DATABASE_URL: {e}"))?;
    let explicit_ssl = url.contains("sslmode=");
    let host = options.get_host();
    let loopback = host == "localhost"
        || host.starts_with('/')
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(if loopback && !explicit_ssl {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    })
}

fn pool_with(
    url: &str,
    max_connections: u32,
    timeouts: DbTimeouts,
    settings: &[(&str, &str)],
) -> anyhow::Result<PgPool> {
    let options = pool_connect_options(url, timeouts, settings)?;
    Ok(pool_options(max_connections).connect_lazy_with(options))
}

/// The worker's connection options: bounded waits, then session `settings`.
fn pool_connect_options(
    url: &str,
    timeouts: DbTimeouts,
    settings: &[(&str, &str)],
) -> anyhow::Result<PgConnectOptions> {
    let bounded = timeouts.settings();
    Ok(base_options(url)?
        .options(bounded.iter().map(|(name, value)| (*name, value.as_str())))
        .options(settings.iter().copied()))
}

/// Options every connection has, migrations' included.
fn base_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(connect_options(url)?
        // A transaction left open by a crashed task must not hold its locks forever.
        .options([("idle_in_transaction_session_timeout", "30s")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2)))
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(3))
}

/// Runs `work` in one transaction: committed when it succeeds, rolled back explicitly
/// when it fails (a dropped transaction keeps its locks until its connection is reused).
pub async fn in_transaction<T, E: From<sqlx::Error>>(
    pool: &PgPool,
    work: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
) -> Result<T, E> {
    let mut tx = pool.begin().await?;
    match work(&mut tx).await {
        Ok(done) => {
            tx.commit().await?;
            Ok(done)
        }
        Err(err) => {
            let _ = tx.rollback().await;
            Err(err)
        }
    }
}

/// Whether a database error means the database is unavailable for now (down, unwell,
/// overloaded, or a statement or lock wait ran out of time): the delivery is held and
/// the work tried again, as in an outage, without spending an attempt. Any other
/// error is the message's failure (`internal_error`).
pub fn is_outage(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception (but 08P01, a protocol violation, is our bug),
            // 40: rollback (serialization, deadlock), 53: insufficient resources,
            // 57: operator intervention (shutdown; 57014, a statement timeout),
            // 58: system error; 55P03: a lock wait that ran out of time
            code == LOCK_TIMEOUT
                || (code != "08P01"
                    && ["08", "40", "53", "57", "58"]
                        .iter()
                        .any(|class| code.starts_with(class)))
        }),
        _ => false,
    }
}

/// SQLSTATE of a lock wait longer than `lock_timeout`.
const LOCK_TIMEOUT: &str = "55P03";
/// SQLSTATE of a statement longer than `statement_timeout` (or cancelled).
const STATEMENT_TIMEOUT: &str = "57014";

/// A short name for a database error, for `/readyz` (never a value from a row).
pub fn describe(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some(LOCK_TIMEOUT) => {
            "lock timeout".into()
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some(STATEMENT_TIMEOUT) => {
            "statement timeout".into()
        }
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        sqlx::Error::PoolTimedOut => "no database connection available".into(),
        _ => "database unreachable".into(),
    }
}

/// `SELECT 1` within a second: the readiness probe.
pub async fn ping(pool: &PgPool) -> bool {
    tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(pool),
    )
    .await
    .is_ok_and(|r| r.is_ok())
}
