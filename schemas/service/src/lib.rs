//! What every factline process shares at start-up, so each binary's `main` is a few lines:
//! settings read from the environment ([`env`]), logs ([`logging`]), the Prometheus recorder
//! ([`metrics`]), traces ([`traces`], off unless an OTLP endpoint is configured), the shutdown
//! signal ([`shutdown`]) and the PostgreSQL pool ([`postgres`]).
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

pub use shutdown::shutdown_signal;
