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
/// bench), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use shutdown::shutdown_signal;
