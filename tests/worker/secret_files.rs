//! Secrets come from the environment or from a file, never from the command line
//! (docs/interface.md, secrets): `ps` shows every process's arguments to every user.

use crate::helpers::*;
use clap::Parser;
use std::io::Write;
use wallet_worker::config::{Cli, Cmd};

fn secret_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(file, "{text}").expect("write");
    file
}

/// The one `wallet-worker:` line of a failed command.
fn error_line(out: &CliOutput) -> String {
    assert!(!out.success, "succeeded: {}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.starts_with('{')).collect();
    assert!(!lines.is_empty(), "no error line");
    lines.join("\n")
}

#[tokio::test]
async fn gateway_set_reads_the_secret_from_a_file_and_warns_when_it_is_on_the_command_line() {
    let db = format!("{PG_BASE}/wallet_test_{}", uuid::Uuid::new_v4().simple());
    let mut cleanup = Cleanup::default();
    cleanup.database_of(&db);
    let file = secret_file("whsec_from_a_file_1234");
    let path = file.path().to_str().unwrap();
    let set = [
        "gateway",
        "set",
        "g1",
        "--token-url",
        "https://pay.example.com/token",
    ];

    let out = run_cli(&db, &[&set[..], &["--secret-file", path]].concat()).await;
    assert!(out.success, "{}", out.stderr);
    let pool = wallet_worker::store::connect_and_migrate(&db, 1, Some(&test_keys()))
        .await
        .unwrap();
    let keys = test_keyring(&pool).await;
    let stored = wallet_worker::store::gateways::find(&pool, &keys, "g1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.secret.expose(),
        "whsec_from_a_file_1234",
        "without the line break"
    );
    pool.close().await;

    let argv = run_cli(
        &db,
        &[&set[..], &["--secret", "whsec_in_argv_5678"]].concat(),
    )
    .await;
    assert!(argv.success, "{}", argv.stderr);
    assert!(
        argv.stderr.contains("warning: --secret is visible"),
        "{}",
        argv.stderr
    );
    assert!(!format!("{}{}", argv.stdout, argv.stderr).contains("whsec_in_argv_5678"));

    let missing = run_cli(&db, &set).await;
    assert!(
        error_line(&missing).contains("WALLET_GATEWAY_SECRET"),
        "{}",
        missing.stderr
    );

    let both = [
        ("WALLET_GATEWAY_SECRET", "whsec_env"),
        ("WALLET_GATEWAY_SECRET_FILE", path),
    ];
    let ambiguous = run_cli_with(&db, &both, &set).await;
    let line = error_line(&ambiguous);
    assert!(line.contains("both set"), "{line}");
    assert!(
        !line.contains("whsec_env") && !line.contains("whsec_from_a_file"),
        "{line}"
    );
}

#[test]
fn the_admin_token_comes_from_its_file() {
    let file = secret_file("admin_token_from_a_file");
    let path = file.path().to_str().unwrap();
    let cli = Cli::try_parse_from(["wallet-worker", "run", "--admin-token-file", path]).unwrap();
    let Cmd::Run(args) = cli.command else {
        panic!("run")
    };
    let args = args.load_secrets().expect("the file is read");
    assert_eq!(
        args.admin_token.unwrap().expose(),
        "admin_token_from_a_file"
    );
    assert!(
        Cli::try_parse_from(["wallet-worker", "run", "--admin-token", "x"]).is_err(),
        "the token is not accepted on the command line"
    );
}

#[tokio::test]
async fn positional_arguments_say_what_they_are_in_help() {
    for (command, expected) in [
        (
            vec!["wallet", "remove", "--help"],
            ["customer's id", "payment source's id"],
        ),
        (vec!["wallet", "list", "--help"], ["customer's id", "--all"]),
        (
            vec!["gateway", "set", "--help"],
            ["Gateway id", "--secret-file"],
        ),
        (
            vec!["gateway", "remove", "--help"],
            ["Gateway id", "gateway list"],
        ),
    ] {
        let out = run_cli("postgres://unused", &command).await;
        assert!(out.success, "{command:?}: {}", out.stderr);
        for text in expected {
            assert!(
                out.stdout.contains(text),
                "{command:?} lacks {text:?}:\n{}",
                out.stdout
            );
        }
    }
}
