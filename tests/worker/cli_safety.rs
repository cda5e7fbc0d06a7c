//! The command line is safe to run with production settings in the environment:
//! `--help` never shows a credential (docs/interface.md, secrets), and read-only commands never create
//! or migrate a database (docs/interface.md, command line).

use crate::helpers::*;
use clap::CommandFactory;
use wallet_worker::config::Cli;

const AMQP_PASSWORD: &str = "amqp-pw-7731";
const DB_PASSWORD: &str = "pg-pw-8842";
const SECRETS: [&str; 6] = [
    AMQP_PASSWORD,
    DB_PASSWORD,
    "admin-token-5519",
    "gateway-secret-6620",
    "sim-secret-2208",
    // The base64 of a data-encryption key (WALLET_ENCRYPTION_KEYS).
    "diU5GxC3Y4v6G633hYTqyOr/WLz+ZmuUe2lKhC3Hn/Y=",
];

/// Every subcommand path of the CLI (`[]`, `["gateway"]`, `["gateway", "set"]`, ...).
fn subcommand_paths(command: &clap::Command, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    for sub in command.get_subcommands() {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_owned());
        subcommand_paths(sub, path, out);
    }
}

#[tokio::test]
async fn help_of_every_subcommand_shows_no_credential_from_the_environment() {
    let mut paths = Vec::new();
    subcommand_paths(&Cli::command(), Vec::new(), &mut paths);
    assert!(paths.len() > 15, "{paths:?}");
    for path in paths {
        for flag in ["--help", "-h"] {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_wallet-worker"))
                .args(&path)
                .arg(flag)
                .env_clear()
                .env(
                    "AMQP_URL",
                    format!("amqp://ops:{AMQP_PASSWORD}@broker:5672/%2f"),
                )
                .env(
                    "DATABASE_URL",
                    format!("postgres://ops:{DB_PASSWORD}@db/wallet"),
                )
                .env("WALLET_ADMIN_TOKEN", SECRETS[2])
                .env("WALLET_ADMIN_TOKEN_FILE", "/run/secrets/admin-token")
                .env("WALLET_GATEWAY_SECRET", SECRETS[3])
                .env("GATEWAY_SIM_SECRET", SECRETS[4])
                .env("WALLET_ENCRYPTION_KEYS", format!("k1:{}", SECRETS[5]))
                .output()
                .await
                .expect("wallet-worker runs");
            assert!(output.status.success(), "{path:?} {flag}");
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            for secret in SECRETS {
                assert!(!printed.contains(secret), "{path:?} {flag} prints {secret}");
            }
            assert!(
                !printed.contains("guest:guest"),
                "{path:?} {flag} prints the default broker password"
            );
        }
    }
}

async fn database_exists(name: &str) -> bool {
    let pool = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres"))
        .await
        .expect("postgres");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&pool)
            .await
            .expect("query");
    pool.close().await;
    exists
}

#[tokio::test]
async fn read_only_commands_against_a_missing_database_fail_in_one_line_and_create_nothing() {
    let name = format!("wallet_test_missing_{}", uuid::Uuid::new_v4().simple());
    let mut cleanup = Cleanup::default();
    cleanup.database(&name);
    let url = format!("{PG_BASE}/{name}");
    for args in [
        vec!["wallet", "list", "cus_1"],
        vec!["wallet", "list", "cus_1", "--all", "--json"],
        vec!["gateway", "list"],
        vec!["dlq", "list"],
        vec!["dlq", "show", "m-1"],
        vec!["dlq", "summary", "--json"],
    ] {
        let out = run_cli(&url, &args).await;
        assert!(!out.success, "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|line| line.starts_with("wallet-worker:"))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", out.stderr);
        assert!(errors[0].contains("does not exist"), "{}", errors[0]);
        assert!(
            !database_exists(&name).await,
            "{args:?} created the database"
        );
    }
}

#[tokio::test]
async fn read_only_commands_against_a_database_without_the_schema_say_so_and_migrate_nothing() {
    let name = format!("wallet_test_empty_{}", uuid::Uuid::new_v4().simple());
    let mut cleanup = Cleanup::default();
    cleanup.database(&name);
    let admin = sqlx::PgPool::connect(&format!("{PG_BASE}/postgres"))
        .await
        .expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create");
    let url = format!("{PG_BASE}/{name}");
    for args in [["wallet", "list", "cus_1"], ["dlq", "show", "m-1"]] {
        let out = run_cli(&url, &args).await;
        assert!(!out.success);
        assert!(
            out.stderr.contains("no wallet-worker schema"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let db = sqlx::PgPool::connect(&url).await.expect("db");
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    assert_eq!(tables, 0, "a read-only command migrated the database");
    db.close().await;
    admin.close().await;
}
