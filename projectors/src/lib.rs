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
//! The folders are the layers: [`runtime`] (consumer, triage, commits, rebuilds: what every
//! projector shares), [`postgres`] and [`search`] (the two sinks), [`declarative`] (projections
//! described in a TOML file) and [`projections`] (the sample read models).

pub mod archive;
pub mod config;
pub mod declarative;
pub mod error;
pub mod postgres;
pub mod projection;
pub mod projections;
pub mod runtime;
pub mod search;
pub mod telemetry;

// The runtime's modules by their former paths (`factline_projectors::dead_letter::…`).
pub use runtime::{
    backoff, bookkeeping, consumer, dead_letter, decode, http, membership, positions, progress,
    record,
};

pub use config::{Config, ConfigError};
pub use error::{ProjectionError, RunError};
pub use projection::{versioned_table, AppliedIdsColumn, Event, Migration, Origin, Projection};
pub use runtime::run::{run, run_sink};
pub use runtime::sink::{Applied, Batch, Input, Rejected, Sink, SinkSpec, DEFAULT_BATCH_MAX};
pub use search::sink::run_search;
pub use search::SearchProjection;
