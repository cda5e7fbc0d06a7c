//! Entry point: parse the command line, set up logging and tracing, run one subcommand,
//! flush the spans, and turn any error into one line on stderr with a non-zero exit.

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wallet_worker::config::{Cli, Cmd};
use wallet_worker::{cli, telemetry, worker};

/// mimalloc: the worker allocates and frees many small buffers per message on several
/// threads, where glibc's allocator spent a tenth of the worker's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `FAILPOINTS=name=action` configures fail points in test builds.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let args = Cli::parse();
    if let Err(err) = wallet_worker::tls::configure(args.tls.tls_ca_file.as_deref()) {
        eprintln!("wallet-worker: {}", cli::one_line(&err));
        return std::process::ExitCode::FAILURE;
    }
    let default_filter = match args.command {
        Cmd::Run(_) | Cmd::GatewaySim(_) => "info",
        // The demo prints its own summary; the worker inside it only speaks up for problems.
        Cmd::Demo(_) => "warn",
        // A one-shot command's answer is its output: only warnings, and none of the
        // broker client's own error lines (a missing queue is reported in one line).
        _ => "warn,lapin=off",
    };
    // Only the commands that handle messages have spans worth exporting.
    let export_spans = matches!(args.command, Cmd::Run(_) | Cmd::Demo(_));
    let telemetry = telemetry::init(args.logging.log_format.into(), default_filter, export_spans);
    let result = dispatch(args.command).await;
    telemetry.shutdown();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wallet-worker: {}", cli::one_line(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Run(args) => {
            let args = args.load_secrets()?;
            let shutdown = CancellationToken::new();
            let mut running = worker::start(args.into(), shutdown.clone()).await?;
            tokio::select! {
                () = worker::shutdown_signal() => {}
                // The worker stopped by itself: an internal task died.
                stopped = &mut running.task => return stopped?,
            }
            tracing::info!("shutdown requested; finishing messages in flight");
            shutdown.cancel();
            running.task.await?
        }
        Cmd::Migrate(db) => cli::migrate(&db).await,
        Cmd::Keys(cmd) => cli::keys::run(cmd).await,
        Cmd::Gateway(cmd) => cli::gateway::run(cmd).await,
        Cmd::Wallet(cmd) => cli::wallet::run(cmd).await,
        Cmd::Dlq(cmd) => cli::dlq::run(cmd).await,
        Cmd::UpgradeQueues(args) => cli::upgrade::run(args).await,
        Cmd::GatewaySim(args) => cli::gateway_sim::run(args).await,
        Cmd::Loadgen(args) => cli::loadgen::run(args).await.map(|_| ()),
        Cmd::Demo(args) => cli::demo::run(args).await,
    }
}
