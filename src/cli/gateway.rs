//! `gateway set|list|remove|reset-circuit`.

use crate::config::GatewayCmd;
use crate::gateway::validate_token_url;
use crate::store::{self, gateways};
use anyhow::{Context, bail};

pub async fn run(cmd: GatewayCmd) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Set {
            db,
            id,
            token_url,
            secret_file,
            disabled,
        } => {
            validate_token_url(&token_url).map_err(|e| anyhow::anyhow!("{e}"))?;
            let Some(secret) =
                crate::secrets::from_env_or_file("WALLET_GATEWAY_SECRET", secret_file.as_deref())?
            else {
                bail!(
                    "the gateway's signing secret is missing: set WALLET_GATEWAY_SECRET or give --secret-file FILE"
                );
            };
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            gateways::upsert(&pool, &id, &token_url, &secret, !disabled)
                .await
                .context("cannot save the gateway")?;
            println!(
                "gateway {id} saved ({token_url}{})",
                if disabled { ", disabled" } else { "" }
            );
        }
        GatewayCmd::List { db, json } => {
            let pool = store::connect_existing(&db.database_url).await?;
            let list = gateways::list(&pool)
                .await
                .context("cannot list gateways")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!(
                    "no gateways; add one with `wallet-worker gateway set ID --token-url URL --secret-file FILE`"
                );
            } else {
                println!(
                    "{:<20} {:<9} {:<10} {:>8}  TOKEN_URL",
                    "ID", "ENABLED", "CIRCUIT", "FAILURES"
                );
                for g in list {
                    println!(
                        "{:<20} {:<9} {:<10} {:>8}  {}",
                        g.id, g.enabled, g.circuit, g.consecutive_failures, g.token_url
                    );
                }
            }
        }
        GatewayCmd::Remove { db, id } => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            if !gateways::remove(&pool, &id)
                .await
                .context("cannot remove the gateway")?
            {
                bail!("no gateway {id}");
            }
            println!("gateway {id} removed");
        }
        GatewayCmd::ResetCircuit { db, id } => {
            let pool = store::connect_and_migrate(&db.database_url, 2).await?;
            if !gateways::reset_circuit(&pool, &id)
                .await
                .context("cannot reset the circuit")?
            {
                bail!("no gateway {id}");
            }
            println!("circuit of gateway {id} closed");
        }
    }
    Ok(())
}
