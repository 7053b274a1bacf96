//! The `event_index` projector (Elasticsearch): configuration from the environment, see [`factline_projectors::Config`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = factline_projectors::Config::from_env()?;
    let shutdown = factline_service::shutdown_signal();
    factline_projectors::run_search(
        config,
        factline_projectors::projections::EventIndexProjection::default(),
        shutdown,
    )
    .await?;
    Ok(())
}
