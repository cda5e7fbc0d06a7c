//! Start-up against a Postgres that turns connections away for now (too many clients,
//! still starting): the worker waits for it instead of failing, so a burst of
//! connections elsewhere does not crash-loop a fleet of workers.

use crate::cleanup::Cleanup;
use crate::helpers::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The log lines written while it is the default subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn contains(&self, text: &str) -> bool {
        let lines = self.0.lock().expect("log buffer");
        String::from_utf8_lossy(&lines).contains(text)
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread: the worker's start-up runs on the test's thread, where the capturing
// subscriber is the default.
#[tokio::test(flavor = "current_thread")]
async fn a_worker_started_while_postgres_turns_connections_away_waits_then_starts() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    // A role that may open no connection at all: Postgres answers it "too many
    // connections for role" (SQLSTATE 53300), as it answers everyone when
    // max_connections is reached.
    let admin = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres"))
        .await
        .expect("postgres");
    let role = format!("wallet_test_busy_{}", uuid::Uuid::new_v4().simple());
    let mut args = test_args();
    let database = args
        .db
        .database_url
        .rsplit('/')
        .next()
        .expect("name")
        .to_owned();
    args.db.database_url = format!("postgres://{role}@127.0.0.1:5432/{database}");
    let mut cleanup = Cleanup::of_worker(&args);
    cleanup.role(&role);
    sqlx::query(&format!(
        "CREATE ROLE {role} LOGIN CREATEDB CONNECTION LIMIT 0"
    ))
    .execute(&admin)
    .await
    .expect("create role");

    let shutdown = CancellationToken::new();
    let mut starting = tokio::spawn(wallet_worker::worker::start(
        args.clone().into(),
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !logs.contains("Postgres turns connections away for now") {
        if starting.is_finished() {
            let ended = (&mut starting).await.expect("start-up task");
            panic!("start-up ended instead of waiting: {:?}", ended.err());
        }
        assert!(tokio::time::Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    sqlx::query(&format!("ALTER ROLE {role} CONNECTION LIMIT -1"))
        .execute(&admin)
        .await
        .expect("lift the limit");
    let running = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("the worker starts once Postgres lets it in")
        .expect("start-up task")
        .expect("worker starts");
    let readyz = format!("http://{}/readyz", running.admin_addr);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !reqwest::get(&readyz)
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running
        .task
        .await
        .expect("worker task")
        .expect("clean shutdown");
    admin.close().await;
}
