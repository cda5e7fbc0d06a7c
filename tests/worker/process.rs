//! The worker as a real process (`wallet-worker run`), for tests that kill or signal it.

use crate::helpers::TEST_KEYS;
use std::process::Stdio;
use tokio::process::{Child, Command};
use wallet_worker::config::WorkerArgs;

pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    /// Starts `wallet-worker run` configured only through the environment, as ops do.
    pub fn start(args: &WorkerArgs) -> WorkerProcess {
        Self::start_with_env(args, &[])
    }

    /// Starts a worker process with `extra` environment variables (e.g. `FAILPOINTS`).
    pub fn start_with_env(args: &WorkerArgs, extra: &[(&str, &str)]) -> WorkerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wallet-worker"));
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DATABASE_URL", &args.db.database_url)
            .env("AMQP_URL", &args.amqp.amqp_url)
            .env("WALLET_EXCHANGE", &args.amqp.exchange)
            .env("WALLET_QUEUE", &args.amqp.queue)
            .env("WALLET_ENCRYPTION_KEYS", TEST_KEYS)
            .env("WALLET_PREFETCH", args.prefetch.to_string())
            .env("WALLET_MAX_ATTEMPTS", args.max_attempts.to_string())
            .env("WALLET_RETRY_BASE_MS", args.retry_base_ms.to_string())
            .env("WALLET_RETRY_MAX_MS", args.retry_max_ms.to_string())
            .env("WALLET_ADMIN_ADDR", "127.0.0.1:0")
            .env(
                "WALLET_MAX_SOURCES_PER_CUSTOMER",
                args.max_sources_per_customer.to_string(),
            )
            .env(
                "WALLET_SHUTDOWN_GRACE_SECS",
                args.shutdown_grace_secs.to_string(),
            )
            .envs(
                args.db_pool_size
                    .map(|size| ("WALLET_DB_POOL_SIZE", size.to_string())),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .envs(extra.iter().copied())
            .kill_on_drop(true);
        WorkerProcess {
            child: command.spawn().expect("wallet-worker binary starts"),
        }
    }

    /// The exit status, once the process ended by itself within `within`.
    #[cfg(feature = "failpoints")]
    pub async fn exited_within(&mut self, within: std::time::Duration) -> std::process::ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .expect("the process exits by itself")
            .expect("exit status")
    }

    /// Its process id, to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(sent.expect("kill runs").success());
        self.child.wait().await.expect("exit status")
    }
}
