//! `wallet list CUSTOMER_ID [--json]`: a customer's payment sources, never a token.

use crate::config::WalletCmd;
use crate::store::{self, wallet};
use anyhow::Context;

pub async fn run(cmd: WalletCmd) -> anyhow::Result<()> {
    let WalletCmd::List {
        db,
        customer_id,
        json,
    } = cmd;
    let pool = store::connect_and_migrate(&db.database_url, 2).await?;
    let sources = wallet::list(&pool, &customer_id)
        .await
        .context("cannot read the wallet")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sources)?);
    } else if sources.is_empty() {
        println!("customer {customer_id} has no saved payment sources");
    } else {
        println!(
            "{:<12} {:<16} {:<28} {:<14} CREATED",
            "ID", "GATEWAY", "NAME", "REFERENCE"
        );
        for s in sources {
            println!(
                "{:<12} {:<16} {:<28} {:<14} {}",
                s.id,
                s.gateway_id,
                s.name,
                s.reference.unwrap_or_default(),
                s.created_at.format("%Y-%m-%d %H:%M:%S")
            );
        }
    }
    Ok(())
}
