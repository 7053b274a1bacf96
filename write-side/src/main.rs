//! The write side binary: configuration from the environment, logs, then [`run`] until
//! SIGINT or SIGTERM.

use factline_write_side::{run, Config};

/// The write side allocates through mimalloc: each command makes many small, short-lived
/// allocations on several threads, and mimalloc spends less CPU on them than glibc's
/// allocator (`make bench`, batch endpoint, 2026-11-28: 37 µs of write-side CPU per command
/// against 42–44 µs with glibc's). It is built without transparent huge pages (the `no_thp`
/// feature, in the workspace's `Cargo.toml`): on a kernel that grants them on request,
/// mimalloc asked for them and the write side peaked at 151 MiB instead of 100. With the
/// `override` feature it is also the C `malloc` of the process: librdkafka copies each
/// produced message and each of its headers into a block of its own, and glibc's `malloc`
/// and `free` for those took 10% of the write side's CPU in the batch endpoint under `perf`
/// (2026-11-30); librdkafka's allocating calls fell from 13% to 6.5% of it. The
/// projector uses it too (see its binary); the read API and the CLI keep glibc's allocator:
/// with mimalloc they were no faster (the read API slower, 2026-11-28; `factline replay`
/// within the noise, 2026-11-29).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    factline_service::logging::init();
    let config = Config::from_env()?;
    let result = run(config, factline_service::shutdown_signal()).await;
    factline_service::traces::flush();
    result?;
    Ok(())
}
