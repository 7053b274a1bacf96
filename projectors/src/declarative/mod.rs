//! Declarative projections: a TOML file maps event types and fields to the columns of
//! PostgreSQL tables (insert, upsert, update, delete, with simple conditions), run by the
//! generic `declarative-projector` binary. See `projectors/config/customer_directory.toml`.

pub mod config;
pub mod projection;
pub mod sql;

pub use config::{DeclarativeConfig, DeclarativeError};
pub use projection::DeclarativeProjection;
