//! The registry's configuration: one struct, read from the environment, validated.

use std::net::SocketAddr;

/// Where the registry listens and where it keeps its state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address (`REGISTRY_ADDR`, default `127.0.0.1:8081`).
    pub listen_addr: SocketAddr,
    /// PostgreSQL connection string (`DATABASE_URL`, required).
    pub database_url: String,
    /// PostgreSQL schema holding the registry's tables (`REGISTRY_DB_SCHEMA`, default `schema_registry`).
    pub db_schema: String,
    /// The longest a request may spend on PostgreSQL (`REGISTRY_DB_TIMEOUT_MS`, default 5000):
    /// waiting for a pooled connection, connecting, and each statement
    /// (`statement_timeout`). A request past it answers 503 with `Retry-After`.
    pub db_timeout_ms: u64,
}

/// The default of [`Config::db_timeout_ms`].
pub const DEFAULT_DB_TIMEOUT_MS: u64 = 5000;

/// A configuration value that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Reads the configuration from the environment and validates it.
    pub fn from_env() -> Result<Config, ConfigError> {
        let listen_addr =
            std::env::var("REGISTRY_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".into());
        let listen_addr =
            listen_addr
                .parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                    name: "REGISTRY_ADDR",
                    reason: e.to_string(),
                })?;
        let database_url =
            std::env::var("DATABASE_URL").map_err(|_| ConfigError::Missing("DATABASE_URL"))?;
        let db_schema =
            std::env::var("REGISTRY_DB_SCHEMA").unwrap_or_else(|_| "schema_registry".into());
        let db_timeout_ms = match std::env::var("REGISTRY_DB_TIMEOUT_MS") {
            Ok(v) => {
                v.trim()
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                        name: "REGISTRY_DB_TIMEOUT_MS",
                        reason: e.to_string(),
                    })?
            }
            Err(_) => DEFAULT_DB_TIMEOUT_MS,
        };
        let config = Config {
            listen_addr,
            database_url,
            db_schema,
            db_timeout_ms,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the values without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let valid = !self.db_schema.is_empty()
            && self.db_schema.len() <= 63
            && self
                .db_schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !self.db_schema.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(ConfigError::Invalid {
                name: "REGISTRY_DB_SCHEMA",
                reason: "must be a lowercase SQL identifier (a-z, 0-9, _)".into(),
            });
        }
        if self.db_timeout_ms == 0 {
            return Err(ConfigError::Invalid {
                name: "REGISTRY_DB_TIMEOUT_MS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}
