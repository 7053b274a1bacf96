//! What every factline process shares at start-up, so each binary's `main` is a few lines:
//! settings read from the environment ([`env`]), logs ([`logging`]), the Prometheus recorder
//! ([`metrics`]), traces ([`traces`], off unless an OTLP endpoint is configured), the shutdown
//! signal ([`shutdown`]) and the PostgreSQL pool ([`postgres`]), and the allocator.
//!
//! It knows nothing of Kafka consumers, projections or HTTP routes (only the request-metrics
//! middleware every HTTP service shares): the write side, the read
//! API, the projectors, the registry and the tools all depend on it, and on nothing heavier
//! for these jobs.

pub mod env;
pub mod logging;
pub mod metrics;
pub mod postgres;
pub mod shutdown;
pub mod traces;

pub use env::{Env, EnvError};

/// Every process that links this crate allocates through mimalloc. Each command, event and
/// request makes many small, short-lived allocations on several threads; glibc's allocator
/// spent about a third of the write side's CPU on them (measured with `perf` under the batch
/// bench), mimalloc a fraction of that, and the archiver catches up 10–40% faster with it. It
/// is built without transparent huge pages (the `no_thp` feature, in the workspace's
/// `Cargo.toml`): on a kernel that grants them on request, mimalloc asked for them, and the
/// write side peaked at 151 MiB instead of 100 and the search projectors at 116–128 MiB
/// instead of 80–84 under the same bench, for no gain in throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use shutdown::shutdown_signal;
