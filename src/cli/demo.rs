//! `demo`.
pub async fn run(_args: crate::config::DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: in progress")
}
