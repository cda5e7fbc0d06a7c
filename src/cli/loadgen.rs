//! `loadgen`.
pub async fn run(_args: crate::config::LoadgenArgs) -> anyhow::Result<()> {
    anyhow::bail!("loadgen: in progress")
}
