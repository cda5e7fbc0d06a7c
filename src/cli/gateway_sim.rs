//! `gateway-sim`.
pub async fn run(_args: crate::config::GatewaySimArgs) -> anyhow::Result<()> {
    anyhow::bail!("gateway-sim: in progress")
}
