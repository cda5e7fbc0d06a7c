//! `gateway set|list|remove|reset-circuit`.

use crate::config::{DbArgs, GatewayCmd};
use crate::crypto::DataKeys;
use crate::domain::Secret;
use crate::gateway::{shown_token_url, validate_token_url};
use crate::store::audit::{self, Via};
use crate::store::{self, gateways};
use anyhow::{Context, bail};
use std::path::Path;

pub async fn run(cmd: GatewayCmd) -> anyhow::Result<()> {
    match cmd {
        GatewayCmd::Set {
            db,
            id,
            token_url,
            secret_file,
            secret: secret_in_argv,
            disabled,
        } => {
            validate_token_url(&token_url).map_err(|e| anyhow::anyhow!("{e}"))?;
            let secret = signing_secret(secret_in_argv, secret_file.as_deref())?;
            set(&db, &id, &token_url, &secret, disabled).await
        }
        GatewayCmd::List { db, json } => list(&db, json).await,
        GatewayCmd::Remove { db, id } => remove(&db, &id).await,
        GatewayCmd::ResetCircuit { db, id, actor } => reset_circuit(&db, &id, &actor.name).await,
    }
}

/// The secret from `--secret`, or else from WALLET_GATEWAY_SECRET or `--secret-file`:
/// exactly one way, and not empty.
fn signing_secret(in_argv: Option<Secret>, file: Option<&Path>) -> anyhow::Result<Secret> {
    let from_env = crate::secrets::from_env_or_file("WALLET_GATEWAY_SECRET", file)?;
    let secret = match (in_argv, from_env) {
        (Some(_), Some(_)) => {
            bail!("--secret and WALLET_GATEWAY_SECRET are both given; give the secret one way")
        }
        (Some(secret), None) => {
            eprintln!(
                "warning: --secret is visible to every user of this machine (ps, shell \
                 history); prefer WALLET_GATEWAY_SECRET or --secret-file FILE"
            );
            Some(secret)
        }
        (None, from_env) => from_env,
    };
    let Some(secret) = secret else {
        bail!(
            "the gateway's signing secret is missing: set WALLET_GATEWAY_SECRET or give --secret-file FILE"
        );
    };
    if secret.is_empty() {
        bail!("the gateway's signing secret must not be empty");
    }
    Ok(secret)
}

async fn set(
    db: &DbArgs,
    id: &str,
    token_url: &str,
    secret: &Secret,
    disabled: bool,
) -> anyhow::Result<()> {
    let data_keys = DataKeys::required_from_env()?;
    let pool = store::connect_and_migrate(&db.database_url, 2, Some(&data_keys)).await?;
    let keys = store::keys::keyring(&pool, data_keys).await?;
    gateways::upsert(&pool, &keys, id, token_url, secret, !disabled)
        .await
        .context("cannot save the gateway")?;
    println!(
        "gateway {id} saved ({}{})",
        shown_token_url(token_url),
        if disabled { ", disabled" } else { "" }
    );
    Ok(())
}

async fn list(db: &DbArgs, json: bool) -> anyhow::Result<()> {
    let pool = store::connect_existing(&db.database_url).await?;
    let list = gateways::list(&pool)
        .await
        .context("cannot list gateways")?;
    if json {
        let list: Vec<_> = list
            .into_iter()
            .map(|g| gateways::GatewayListing {
                token_url: shown_token_url(&g.token_url),
                ..g
            })
            .collect();
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
                g.id,
                g.enabled,
                g.circuit,
                g.consecutive_failures,
                shown_token_url(&g.token_url)
            );
        }
    }
    Ok(())
}

async fn remove(db: &DbArgs, id: &str) -> anyhow::Result<()> {
    let keys = DataKeys::from_env()?;
    let pool = store::connect_and_migrate(&db.database_url, 2, keys.as_ref()).await?;
    if !gateways::remove(&pool, id)
        .await
        .context("cannot remove the gateway")?
    {
        bail!("no gateway {id}");
    }
    println!("gateway {id} removed");
    Ok(())
}

/// Closes the gateway's circuit and records who did, in the audit log.
async fn reset_circuit(db: &DbArgs, id: &str, actor: &str) -> anyhow::Result<()> {
    let keys = DataKeys::from_env()?;
    let pool = store::connect_and_migrate(&db.database_url, 2, keys.as_ref()).await?;
    if !gateways::reset_circuit(&pool, id)
        .await
        .context("cannot reset the circuit")?
    {
        bail!("no gateway {id}");
    }
    let target = serde_json::json!({ "gateway": id });
    audit::record(&pool, actor, Via::Cli, "gateway.reset_circuit", &target, 1)
        .await
        .context("cannot record the reset in the audit log")?;
    println!("circuit of gateway {id} closed");
    Ok(())
}
