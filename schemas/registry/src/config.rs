//! The registry's configuration: one struct, read from the environment through
//! [`factline_service::Env`] like every service's, validated.

use std::net::SocketAddr;

use factline_service::{Env, EnvError};

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
    /// A variable that cannot be read: missing, malformed, or an unknown `REGISTRY_*` name
    /// (probably a typo).
    #[error(transparent)]
    Env(#[from] EnvError),
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
        Config::from_vars(std::env::vars())
    }

    /// Reads the configuration from `(name, value)` pairs through [`Env`], like every
    /// factline service: empty values count as unset, an unknown `REGISTRY_*` is an error.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env = Env::from_vars(vars);
        let config = Config {
            listen_addr: env.parse_or("REGISTRY_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            database_url: env.required("DATABASE_URL")?,
            db_schema: env.parse_or("REGISTRY_DB_SCHEMA", "schema_registry".to_owned())?,
            db_timeout_ms: env.parse_or("REGISTRY_DB_TIMEOUT_MS", DEFAULT_DB_TIMEOUT_MS)?,
        };
        env.reject_unknown(&["REGISTRY_"])?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        [("DATABASE_URL", "postgres://u@h/db")]
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_empty_values_and_overrides() {
        let config = Config::from_vars(vars(&[("REGISTRY_DB_SCHEMA", "")])).unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(config.db_schema, "schema_registry");
        assert_eq!(config.db_timeout_ms, DEFAULT_DB_TIMEOUT_MS);
        let config = Config::from_vars(vars(&[("REGISTRY_DB_TIMEOUT_MS", "250")])).unwrap();
        assert_eq!(config.db_timeout_ms, 250);
    }

    #[test]
    fn unknown_missing_and_bad_values_are_named() {
        let error = Config::from_vars(vars(&[("REGISTRY_DB_TIMEOUT", "250")])).unwrap_err();
        assert!(error.to_string().contains("REGISTRY_DB_TIMEOUT"), "{error}");
        let error = Config::from_vars(Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "DATABASE_URL is required");
        let error = Config::from_vars(vars(&[("REGISTRY_ADDR", "nowhere")])).unwrap_err();
        assert!(error.to_string().starts_with("REGISTRY_ADDR"), "{error}");
        assert!(Config::from_vars(vars(&[("REGISTRY_DB_TIMEOUT_MS", "0")])).is_err());
    }
}
