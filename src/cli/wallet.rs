//! `wallet list|remove|set-default`: a customer's wallet from the command line. Changes
//! go through the same commit as the `wallet.remove` / `wallet.set_default` messages
//! (inbox, decisions under the customer's lock, outbox) and publish the same events.

use crate::broker::{self, relay};
use crate::config::{WalletChangeArgs, WalletCmd};
use crate::crypto::{DataKeys, Keyring};
use crate::domain::events::{EventType, Outcome};
use crate::domain::ids::{CustomerId, MessageId, SourceId};
use crate::domain::{Change, Clock, Effect, MessageType, Meta, SourceRef};
use crate::store::audit::{self, Via};
use crate::store::outbox::PendingEvent;
use crate::store::{self, Committed, Rules, wallet};
use anyhow::{Context, bail};
use lapin::options::ConfirmSelectOptions;

pub async fn run(cmd: WalletCmd) -> anyhow::Result<()> {
    match cmd {
        WalletCmd::List {
            db,
            customer_id,
            all,
            json,
        } => list(&db.database_url, &customer_id, all, json).await,
        WalletCmd::Remove(args) => change(args, MessageType::WalletRemove, Effect::Remove).await,
        WalletCmd::SetDefault(args) => {
            change(args, MessageType::WalletSetDefault, Effect::SetDefault).await
        }
    }
}

async fn list(database_url: &str, customer_id: &str, all: bool, json: bool) -> anyhow::Result<()> {
    let pool = store::connect_existing(database_url).await?;
    let sources = wallet::list(&pool, customer_id, Clock::system().now(), all)
        .await
        .context("cannot read the wallet")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sources)?);
        return Ok(());
    }
    if sources.is_empty() {
        println!("customer {customer_id} has no available payment sources");
        return Ok(());
    }
    println!(
        "{:<12} {:<16} {:<28} {:<14} {:<20} STATE",
        "ID", "GATEWAY", "NAME", "REFERENCE", "CREATED"
    );
    for s in sources {
        let state = match (s.default, s.available, s.expired) {
            (true, _, _) => "default",
            (false, true, _) => "available",
            (false, false, true) => "expired",
            (false, false, false) => "gateway unavailable",
        };
        println!(
            "{:<12} {:<16} {:<28} {:<14} {:<20} {state}",
            s.id,
            s.gateway_id,
            s.name,
            s.reference.unwrap_or_default(),
            s.created_at.format("%Y-%m-%d %H:%M:%S"),
        );
    }
    Ok(())
}

/// Commits the change like a message would, then publishes its event. If the broker
/// cannot be reached, the event stays in the outbox and a running worker publishes it.
async fn change(
    args: WalletChangeArgs,
    kind: MessageType,
    effect: fn(SourceRef) -> Effect,
) -> anyhow::Result<()> {
    let data_keys = DataKeys::required_from_env()?;
    let pool = store::connect_existing(&args.db.database_url).await?;
    let keys = store::keys::keyring(&pool, data_keys).await?;
    let target = SourceRef {
        customer_id: CustomerId::parse(&args.customer_id, "customer_id")?,
        customer_payment_source_id: SourceId::parse(&args.source_id, "source_id")?,
    };
    let (outcome, events) = commit(&pool, keys, kind, effect(target)).await?;
    let reason = events
        .first()
        .and_then(|event| rejection_reason(&event.body));
    match publish(&args, &pool, events).await {
        Ok(()) => {}
        Err(err) => eprintln!(
            "wallet-worker: the event is stored but not yet published ({}); a running worker publishes it",
            super::one_line(&err)
        ),
    }
    let (customer, source) = (&args.customer_id, &args.source_id);
    let changed = match outcome {
        Outcome::Published(EventType::Removed | EventType::DefaultSet) => 1,
        _ => 0,
    };
    let audited = serde_json::json!({
        "customer_id": customer, "source_id": source, "outcome": outcome.as_str(), "reason": reason,
    });
    audit::record(
        &pool,
        &args.actor.name,
        Via::Cli,
        kind.as_str(),
        &audited,
        changed,
    )
    .await
    .context("cannot record the change in the audit log")?;
    match outcome {
        Outcome::Published(EventType::Removed) => {
            println!("removed {source} from the wallet of {customer}")
        }
        Outcome::Published(EventType::DefaultSet) => {
            println!("{source} is now the default of {customer}")
        }
        _ => {
            let reason = reason.unwrap_or_else(|| "refused".into());
            bail!("{kind} refused: {reason} (customer {customer}, source {source})")
        }
    }
    Ok(())
}

/// Commits `effect` under a message id of its own: its outcome and the events to publish.
async fn commit(
    pool: &sqlx::PgPool,
    keys: Keyring,
    kind: MessageType,
    effect: Effect,
) -> anyhow::Result<(Outcome, Vec<PendingEvent>)> {
    let meta = Meta {
        // Well-formed by construction: 40 ASCII characters.
        id: MessageId::stored(format!("cli-{}", uuid::Uuid::new_v4())),
        kind,
        occurred_at: chrono::Utc::now(),
        correlation_id: None,
        maybe_seen: false,
    };
    let rules = Rules {
        clock: Clock::system(),
        // Neither command saves a source: the cap does not apply.
        max_sources_per_customer: i64::MAX,
        keys,
    };
    let change = Change::new(&meta, vec![effect]);
    let (committed, events) = store::commit_now(pool, &rules, &meta.id, kind, &change)
        .await
        .context("cannot change the wallet")?;
    match committed {
        Committed::Applied { outcome, .. } => Ok((outcome, events)),
        Committed::Duplicate => unreachable!("a fresh message id is never a duplicate"),
    }
}

/// The `reason` a rejection event carries.
fn rejection_reason(body: &[u8]) -> Option<String> {
    let event: serde_json::Value = serde_json::from_slice(body).ok()?;
    event["data"]["reason"].as_str().map(str::to_owned)
}

async fn publish(
    args: &WalletChangeArgs,
    pool: &sqlx::PgPool,
    events: Vec<PendingEvent>,
) -> anyhow::Result<()> {
    let (connection, _node) = broker::connect_any(&args.amqp.amqp_url, "cli").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    relay::publish_and_forget(pool, &channel, &args.amqp.exchange, &events).await?;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}
