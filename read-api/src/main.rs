//! The read API binary: configuration from the environment, then serve until SIGINT/SIGTERM.

use factline_read_api::{telemetry, Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init_tracing();
    let config = Config::from_env()?;
    let server = Server::bind(config).await?;
    server
        .serve(factline_projectors::signal::shutdown_signal())
        .await?;
    Ok(())
}
