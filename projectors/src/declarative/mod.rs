//! Declarative projections: a TOML file maps event types and fields to the columns of
//! PostgreSQL tables or the fields of Elasticsearch documents (insert, upsert, update, delete,
//! with simple conditions), run by `factline-projector --config FILE` (or registered by name). See
//! `projectors/config/customer_directory.toml` and `projectors/config/customer_search.toml`.

pub mod config;
pub mod projection;
pub mod search;
pub mod sql;

pub use config::{DeclarativeConfig, DeclarativeError, SinkKind};
pub use projection::DeclarativeProjection;
pub use search::DeclarativeSearchProjection;
