//! Subcommands other than `run`: thin layers over the library that print for people,
//! or JSON for scripts with `--json`.

pub mod demo;
pub mod dlq;
pub mod gateway;
pub mod gateway_sim;
pub mod keys;
pub mod loadgen;
mod settings;
pub mod upgrade;
pub mod wallet;

use crate::config::DbArgs;
use crate::crypto::DataKeys;

/// `migrate`: create the database if needed and apply migrations. The keys are needed
/// only to seal secrets an earlier version stored in plaintext.
pub async fn migrate(db: &DbArgs) -> anyhow::Result<()> {
    let keys = DataKeys::from_env()?;
    let pool = crate::store::connect_and_migrate(&db.database_url, 2, keys.as_ref()).await?;
    pool.close().await;
    println!("migrations applied");
    Ok(())
}

/// An error and its causes on one line: `cannot reach Postgres: connection refused`.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    if line.contains("invalid peer certificate: UnknownIssuer") {
        line.push_str(
            " (the server's certificate is signed by no CA this process trusts: the OS store, \
             plus WALLET_TLS_CA_FILE when set)",
        );
    }
    line.replace('\n', " ")
}
