//! The read API binary: configuration from the environment, logs, then serve until SIGINT or
//! SIGTERM.

use factline_read_api::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = Config::from_env()?;
    let server = Server::bind(config).await?;
    let result = server.serve(factline_service::shutdown_signal()).await;
    factline_service::traces::flush();
    result?;
    Ok(())
}
