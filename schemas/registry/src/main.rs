//! `factline-registry`: the local schema registry binary. Configuration from the environment,
//! logs, then [`run`] until SIGINT or SIGTERM.

use factline_registry::{run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = Config::from_env()?;
    run(config, factline_service::shutdown_signal()).await
}
