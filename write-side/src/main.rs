//! The write side binary: configuration from the environment, logs, then [`run`] until
//! SIGINT or SIGTERM.

use factline_write_side::{run, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = Config::from_env()?;
    let result = run(config, factline_service::shutdown_signal()).await;
    factline_service::traces::flush();
    result?;
    Ok(())
}
