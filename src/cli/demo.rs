//! `demo`: the whole product once on local Postgres and RabbitMQ ([`crate::tools::demo`]).

use crate::config::DemoArgs;
use crate::tools;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs { worker, count } = args;
    tools::demo::run(worker.load_secrets()?.into(), count).await
}
