//! The projector runtime and the projectors built on it.
//!
//! A projection ([`Projection`]) says which events it wants and how each one changes its read
//! model in PostgreSQL; [`run`] does everything else: consumer group `{name}-v{version}`,
//! decoding through the schema registry, batching, one transaction per batch holding the
//! read-model change, the applied event ids and the positions, seeking to the stored positions
//! on every assignment, dead-lettering, retries, metrics, health and graceful shutdown.
//! A search projection ([`search::SearchProjection`]) keeps Elasticsearch documents instead and
//! runs with [`run_search`]; both go through the same loop over a [`runtime::sink::Sink`].
//!
//! Sample projections live in [`projections`]; [`declarative`] runs a projection described in a
//! TOML file.

pub mod backoff;
pub mod bookkeeping;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod declarative;
pub mod decode;
pub mod error;
pub mod http;
pub mod membership;
pub mod positions;
pub mod postgres;
pub mod progress;
pub mod projection;
pub mod projections;
pub mod record;
pub mod runner;
pub mod runtime;
pub mod search;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use error::{ProjectionError, RunError};
pub use projection::{versioned_table, Event, Migration, Origin, Projection};
pub use runner::{run, run_sink};
pub use search::sink::run_search;
pub use search::SearchProjection;
