//! From the command line's clap structs to the library's plain settings: the one place
//! where a flag becomes a setting, so no library module imports the command line.

use crate::config::{AmqpArgs, DbArgs, LogFormat, WorkerArgs};
use crate::telemetry;
use crate::worker::{AmqpSettings, DbSettings, WorkerSettings};

impl From<LogFormat> for telemetry::LogFormat {
    fn from(format: LogFormat) -> Self {
        match format {
            LogFormat::Json => Self::Json,
            LogFormat::Pretty => Self::Pretty,
        }
    }
}

impl From<DbArgs> for DbSettings {
    fn from(db: DbArgs) -> Self {
        Self {
            database_url: db.database_url,
        }
    }
}

impl From<AmqpArgs> for AmqpSettings {
    fn from(amqp: AmqpArgs) -> Self {
        Self {
            amqp_url: amqp.amqp_url,
            exchange: amqp.exchange,
            queue: amqp.queue,
        }
    }
}

/// `admin_token` as [`WorkerArgs::load_secrets`] left it (`None` before it ran).
impl From<WorkerArgs> for WorkerSettings {
    fn from(args: WorkerArgs) -> Self {
        Self {
            db: args.db.into(),
            amqp: args.amqp.into(),
            prefetch: args.prefetch,
            max_attempts: args.max_attempts,
            retry_base_ms: args.retry_base_ms,
            retry_max_ms: args.retry_max_ms,
            admin_addr: args.admin_addr,
            metrics_addr: args.metrics_addr,
            admin_token: args.admin_token,
            db_pool_size: args.db_pool_size,
            circuit_threshold: args.circuit_threshold,
            circuit_cool_down_ms: args.circuit_cool_down_ms,
            shutdown_grace_secs: args.shutdown_grace_secs,
            max_sources_per_customer: args.max_sources_per_customer,
            clock: args.clock,
            keys: args.keys,
            inbox_retention_days: args.inbox_retention_days,
            order_retention_days: args.order_retention_days,
            db_statement_timeout_ms: args.db_statement_timeout_ms,
            db_lock_timeout_ms: args.db_lock_timeout_ms,
            commit_stall_secs: args.commit_stall_secs,
            dead_letter_retention_days: args.dead_letter_retention_days,
            retention_interval_ms: args.retention_interval_ms,
        }
    }
}
