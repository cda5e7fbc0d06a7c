//! `upgrade-queues`: the queues of an older deployment moved onto the quorum topology
//! (docs/operations.md, upgrading the queues).

use crate::broker::{Topology, connect_any, upgrade};
use crate::config::UpgradeArgs;

pub async fn run(args: UpgradeArgs) -> anyhow::Result<()> {
    let (connection, node) = connect_any(&args.amqp.amqp_url, "upgrade-queues").await?;
    let topology = Topology::new(
        &args.amqp.exchange,
        &args.amqp.queue,
        args.retry_base_ms,
        args.retry_max_ms,
    );
    let upgraded = upgrade::upgrade(&connection, &topology).await;
    let _ = connection.close(200, "upgraded".into()).await;
    let upgraded = upgraded?;
    println!(
        "queues of {} on {node} are current: {} replaced, {} messages and {} dead letters moved",
        topology.queue, upgraded.queues_replaced, upgraded.messages, upgraded.dead_letters
    );
    Ok(())
}
