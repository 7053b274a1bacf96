//! Runs a declarative projection: `declarative-projector --config FILE`; connections from the
//! environment, see [`factline_projectors::Config`]. The file's `sink` picks PostgreSQL
//! (default) or Elasticsearch.

use clap::Parser;
use factline_projectors::declarative::{
    DeclarativeConfig, DeclarativeProjection, DeclarativeSearchProjection, SinkKind,
};

/// Command line.
#[derive(Parser)]
#[command(about = "Runs a projection described by a TOML file")]
struct Args {
    /// The projection file, e.g. projectors/config/customer_directory.toml.
    #[arg(long, env = "PROJECTOR_CONFIG")]
    config: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    factline_service::logging::init();
    let file = DeclarativeConfig::load(&args.config)?;
    let config = factline_projectors::Config::from_env()?;
    let shutdown = factline_service::shutdown_signal();
    match file.sink {
        SinkKind::Postgres => {
            let projection = DeclarativeProjection::new(file);
            factline_projectors::run(config, projection, shutdown).await?;
        }
        SinkKind::Elasticsearch => {
            let projection = DeclarativeSearchProjection::new(file);
            factline_projectors::run_search(config, projection, shutdown).await?;
        }
    }
    Ok(())
}
