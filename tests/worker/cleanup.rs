//! What a test creates on the shared Postgres and RabbitMQ is removed when the test
//! ends, whether it passed or failed: [`Cleanup`] drops its databases (`WITH (FORCE)`:
//! a failed test may leave connections open) and deletes its queues and exchanges.

use wallet_worker::config::WorkerArgs;

/// Removes, when dropped, the databases, queues and exchanges it names. Removal is
/// best effort and never panics (a panic while a failed test unwinds would abort the
/// test binary); what fails is reported on stderr.
#[derive(Default)]
pub struct Cleanup(Names);

/// What a [`Cleanup`] removes.
#[derive(Default)]
struct Names {
    databases: Vec<String>,
    queues: Vec<String>,
    exchanges: Vec<String>,
    /// Postgres roles, dropped after the databases (a role cannot go while it owns one).
    roles: Vec<String>,
}

impl Cleanup {
    /// Everything a worker with `args` creates: its database, its exchange and every
    /// queue of its topology.
    pub fn of_worker(args: &WorkerArgs) -> Self {
        let topology = wallet_worker::broker::Topology::new(
            &args.amqp.exchange,
            &args.amqp.queue,
            args.retry_base_ms,
            args.retry_max_ms,
        );
        let mut cleanup = Self::default();
        cleanup.database_of(&args.db.database_url);
        cleanup.exchange(&args.amqp.exchange);
        for queue in topology.queues() {
            cleanup.queue(&queue);
        }
        cleanup
    }

    /// The database a Postgres URL names.
    pub fn database_of(&mut self, url: &str) -> &mut Self {
        let name = url.rsplit('/').next().unwrap_or_default();
        let name = name.split('?').next().unwrap_or_default();
        self.database(name)
    }

    pub fn database(&mut self, name: &str) -> &mut Self {
        self.0.databases.push(name.to_owned());
        self
    }

    pub fn queue(&mut self, name: &str) -> &mut Self {
        self.0.queues.push(name.to_owned());
        self
    }

    pub fn exchange(&mut self, name: &str) -> &mut Self {
        self.0.exchanges.push(name.to_owned());
        self
    }

    pub fn role(&mut self, name: &str) -> &mut Self {
        self.0.roles.push(name.to_owned());
        self
    }
}

impl Drop for Cleanup {
    /// Runs on a thread of its own with a runtime of its own: `Drop` cannot await, and
    /// the test's runtime may be the one unwinding.
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        if names.databases.is_empty()
            && names.queues.is_empty()
            && names.exchanges.is_empty()
            && names.roles.is_empty()
        {
            return;
        }
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the clean-up");
            runtime.block_on(async {
                names.remove_from_broker().await;
                names.remove_databases().await;
            });
        });
        if removal.join().is_err() {
            eprintln!("[cleanup] the clean-up thread panicked");
        }
    }
}

impl Names {
    async fn remove_from_broker(&self) {
        if self.queues.is_empty() && self.exchanges.is_empty() {
            return;
        }
        let connection =
            match wallet_worker::broker::connect(crate::helpers::AMQP_URL, "test-cleanup").await {
                Ok(connection) => connection,
                Err(err) => return eprintln!("[cleanup] cannot reach RabbitMQ: {err}"),
            };
        for queue in &self.queues {
            // A channel each: deleting a queue that is gone closes nothing today, but
            // one failure must not stop the others.
            let Ok(channel) = connection.create_channel().await else {
                continue;
            };
            if let Err(err) = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await
            {
                eprintln!("[cleanup] queue {queue}: {err}");
            }
        }
        for exchange in &self.exchanges {
            let Ok(channel) = connection.create_channel().await else {
                continue;
            };
            if let Err(err) = channel
                .exchange_delete(exchange.as_str().into(), Default::default())
                .await
            {
                eprintln!("[cleanup] exchange {exchange}: {err}");
            }
        }
        let _ = connection.close(200, "cleaned up".into()).await;
    }

    async fn remove_databases(&self) {
        if self.databases.is_empty() && self.roles.is_empty() {
            return;
        }
        use sqlx::Connection;
        let url = format!("{}/postgres", crate::helpers::PG_BASE);
        // A loaded machine's Postgres may be full for a moment ("too many clients"):
        // try for a while before leaving anything behind.
        let mut tries = 0;
        let mut connection = loop {
            match sqlx::PgConnection::connect(&url).await {
                Ok(connection) => break connection,
                Err(err) if tries < 50 => {
                    tries += 1;
                    if tries == 1 {
                        eprintln!("[cleanup] Postgres refused, trying again: {err}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(err) => return eprintln!("[cleanup] cannot reach Postgres: {err}"),
            }
        };
        for name in &self.databases {
            let statement = format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                name.replace('"', "\"\"")
            );
            if let Err(err) = sqlx::query(&statement).execute(&mut connection).await {
                eprintln!("[cleanup] database {name}: {err}");
            }
        }
        for name in &self.roles {
            let statement = format!("DROP ROLE IF EXISTS \"{}\"", name.replace('"', "\"\""));
            if let Err(err) = sqlx::query(&statement).execute(&mut connection).await {
                eprintln!("[cleanup] role {name}: {err}");
            }
        }
        let _ = connection.close().await;
    }
}
