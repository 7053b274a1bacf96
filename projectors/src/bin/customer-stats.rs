//! The `customer_stats` projector: configuration from the environment, see [`factline_projectors::Config`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = factline_projectors::Config::from_env()?;
    let shutdown = factline_service::shutdown_signal();
    factline_projectors::run(
        config,
        factline_projectors::projections::CustomerStatsProjection,
        shutdown,
    )
    .await?;
    Ok(())
}
