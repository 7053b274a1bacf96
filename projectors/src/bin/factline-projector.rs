//! `factline-projector`: runs one projector. `factline-projector <name>` runs a registered
//! projection (see `projections/mod.rs`), `factline-projector --config FILE` a declarative
//! one from its TOML file, `factline-projector --list` prints the registry. Connections and
//! tuning come from the environment, see [`factline_projectors::Config`].

use clap::Parser;
use factline_projectors::declarative::DeclarativeConfig;
use factline_projectors::projections::{self, registry};

/// Command line.
#[derive(Parser)]
#[command(about = "Runs one factline projector", group(
    clap::ArgGroup::new("what").required(true).args(["name", "config", "list"])
))]
struct Args {
    /// The registered projection to run, e.g. order_summary (see --list).
    name: Option<String>,
    /// A declarative projection file to run instead, e.g. projectors/config/customer_search.toml.
    #[arg(long, env = "PROJECTOR_CONFIG")]
    config: Option<String>,
    /// Prints every registered projection, one per line: name, default port, sink
    /// (postgres|elasticsearch), kind (code|declarative), separated by tabs.
    #[arg(long)]
    list: bool,
}

/// The projector allocates through mimalloc, as the write side does: decoding a batch and
/// freeing it make many small, short-lived allocations, and with glibc's allocator `malloc`
/// and `free` were 22% and 19% of `order_summary`'s CPU under `perf` (much of it
/// `malloc_consolidate`, run on a large allocation after a batch's many small frees).
/// `make bench`, 300k events, 2026-11-29, alternating: `order_summary` 68.1k and 69.0k
/// events/s against 60.3k and 61.1k with glibc's; the archiver and the search projectors
/// the same; peaks 2–6 MiB higher (`order_summary` 243–246 MiB). It is also the C `malloc`
/// (the `override` feature), so librdkafka's block for each consumed record comes from it:
/// 2026-11-30, alternating, 300k events: `order_summary` 58.4k and 57.1k events/s against
/// 49.7k and 51.0k without the override, peaks 4 MiB higher.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let all = projections::registry();
    if args.list {
        print!("{}", registry::list(&all)?);
        return Ok(());
    }
    factline_service::logging::init();
    let config = factline_projectors::Config::from_env()?;
    let shutdown = Box::pin(factline_service::shutdown_signal());
    let result = if let Some(name) = args.name {
        let registered = registry::find(&all, &name)?;
        registered.check()?;
        registered.run(config, shutdown).await
    } else if let Some(path) = args.config {
        let file = DeclarativeConfig::load(&path)?;
        registry::run_declarative(config, file, shutdown).await
    } else {
        Ok(())
    };
    factline_service::traces::flush();
    result?;
    Ok(())
}
