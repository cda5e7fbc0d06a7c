//! `dlq list|show|replay|purge`.
pub async fn run(_cmd: crate::config::DlqCmd) -> anyhow::Result<()> {
    anyhow::bail!("dlq: in progress")
}
