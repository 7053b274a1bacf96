//! The read API's configuration: one struct with the local stack's defaults, read from the
//! environment through [`factline_service::Env`] (one `KAFKA_PROPERTY_*` parser; an unknown
//! `READ_API_*` variable is an error, not a silent default), then checked by a pure
//! [`Config::validate`]. See README.md for every variable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use factline_service::postgres::PoolSettings;
use factline_service::{Env, EnvError};

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable that cannot be read: malformed, or an unknown `READ_API_*` name (probably a
    /// typo).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A value that does not make sense (alone or with the others).
    #[error("{variable}: {message}")]
    Invalid {
        /// The environment variable.
        variable: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// The variable concerned.
    pub fn variable(&self) -> &str {
        match self {
            ConfigError::Env(EnvError::Missing { name })
            | ConfigError::Env(EnvError::Invalid { name, .. })
            | ConfigError::Env(EnvError::Unknown { name, .. }) => name,
            ConfigError::Invalid { variable, .. } => variable,
        }
    }
}

/// The former directory of projector files: accepted and ignored (with a warning) while
/// deployment scripts still set it, since the views now come from PostgreSQL.
const RETIRED_DECLARATIVE_DIR: &str = "READ_API_DECLARATIVE_DIR";

fn invalid(variable: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable: variable.into(),
        message: message.into(),
    }
}

/// Everything the read API needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address. `READ_API_ADDR`, default `127.0.0.1:8090`.
    pub addr: SocketAddr,
    /// PostgreSQL (read models and projector positions). `DATABASE_URL`.
    pub database_url: String,
    /// Connections in the PostgreSQL pool. `READ_API_DATABASE_POOL_SIZE`, default 16.
    pub database_pool_size: usize,
    /// Longest wait for a free pooled connection. `READ_API_DATABASE_WAIT_TIMEOUT_MS`,
    /// default 2000.
    pub database_wait_timeout: Duration,
    /// Longest time to open (or check) a PostgreSQL connection.
    /// `READ_API_DATABASE_CONNECT_TIMEOUT_MS`, default 2000.
    pub database_connect_timeout: Duration,
    /// Longest PostgreSQL statement: the server cancels it (`statement_timeout`) and the read
    /// API stops waiting for an answer shortly after. `READ_API_STATEMENT_TIMEOUT_MS`,
    /// default 5000.
    pub statement_timeout: Duration,
    /// How often the projector status is re-read while no request waits for a position.
    /// `READ_API_STATUS_REFRESH_MS`, default 250.
    pub status_refresh: Duration,
    /// Elasticsearch, credentials allowed in the URL. `ELASTICSEARCH_URL`.
    pub elasticsearch_url: String,
    /// Kafka, for live high watermarks (lag). `KAFKA_BROKERS`.
    pub kafka_brokers: String,
    /// librdkafka properties passed through from `KAFKA_PROPERTY_<NAME>`.
    pub kafka_properties: BTreeMap<String, String>,
    /// Prepended to Elasticsearch alias names. `READ_API_INDEX_PREFIX` (default: the topic prefix).
    pub index_prefix: String,
    /// Prepended to topic names given in queries (`/events?topic=`). `READ_API_TOPIC_PREFIX`.
    pub topic_prefix: String,
    /// SHA-256 hex hashes of accepted bearer keys; empty = no auth. `READ_API_KEYS_SHA256`.
    pub api_key_hashes: Vec<[u8; 32]>,
    /// Longest wait for `consistent_with`. `READ_API_CONSISTENCY_TIMEOUT_MS`, default 5000.
    pub consistency_timeout: Duration,
    /// Largest page. `READ_API_MAX_PAGE_SIZE`, default 100.
    pub max_page_size: usize,
    /// Page size when none is asked for. `READ_API_DEFAULT_PAGE_SIZE`, default 20.
    pub default_page_size: usize,
}

impl Config {
    /// A configuration with the local stack's defaults.
    pub fn new(database_url: &str, elasticsearch_url: &str, kafka_brokers: &str) -> Config {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8090)),
            database_url: database_url.to_owned(),
            database_pool_size: 16,
            database_wait_timeout: Duration::from_millis(2000),
            database_connect_timeout: Duration::from_millis(2000),
            statement_timeout: Duration::from_millis(5000),
            status_refresh: Duration::from_millis(250),
            elasticsearch_url: elasticsearch_url.to_owned(),
            kafka_brokers: kafka_brokers.to_owned(),
            kafka_properties: BTreeMap::new(),
            index_prefix: String::new(),
            topic_prefix: String::new(),
            api_key_hashes: Vec::new(),
            consistency_timeout: Duration::from_millis(5000),
            max_page_size: 100,
            default_page_size: 20,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the given variables (the environment, or a test's map), then validates.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Config, ConfigError> {
        let env = Env::from_vars(vars);
        let mut config = Config::new(
            env.get("DATABASE_URL")
                .unwrap_or("postgres://factline@127.0.0.1:55432/factline"),
            env.get("ELASTICSEARCH_URL")
                .unwrap_or("http://127.0.0.1:9200"),
            env.get("KAFKA_BROKERS").unwrap_or("127.0.0.1:9092"),
        );
        config.addr = env.parse_or("READ_API_ADDR", config.addr)?;
        config.database_pool_size =
            env.parse_or("READ_API_DATABASE_POOL_SIZE", config.database_pool_size)?;
        for (variable, field) in [
            (
                "READ_API_DATABASE_WAIT_TIMEOUT_MS",
                &mut config.database_wait_timeout,
            ),
            (
                "READ_API_DATABASE_CONNECT_TIMEOUT_MS",
                &mut config.database_connect_timeout,
            ),
            (
                "READ_API_STATEMENT_TIMEOUT_MS",
                &mut config.statement_timeout,
            ),
            ("READ_API_STATUS_REFRESH_MS", &mut config.status_refresh),
            (
                "READ_API_CONSISTENCY_TIMEOUT_MS",
                &mut config.consistency_timeout,
            ),
        ] {
            *field = Duration::from_millis(env.parse_or(variable, field.as_millis() as u64)?);
        }
        config.topic_prefix = env
            .get("READ_API_TOPIC_PREFIX")
            .unwrap_or_default()
            .to_owned();
        config.index_prefix = env
            .get("READ_API_INDEX_PREFIX")
            .map(str::to_owned)
            .unwrap_or_else(|| config.topic_prefix.clone());
        config.max_page_size = env.parse_or("READ_API_MAX_PAGE_SIZE", config.max_page_size)?;
        config.default_page_size =
            env.parse_or("READ_API_DEFAULT_PAGE_SIZE", config.default_page_size)?;
        if let Some(keys) = env.get("READ_API_KEYS_SHA256") {
            config.api_key_hashes = parse_key_hashes(keys)
                .map_err(|message| invalid("READ_API_KEYS_SHA256", message))?;
        }
        if env.get(RETIRED_DECLARATIVE_DIR).is_some() {
            // still set by older scripts: harmless, but it no longer does anything
            tracing::warn!(
                "{RETIRED_DECLARATIVE_DIR} is ignored: the read API serves the declarative views \
                 its projectors registered in PostgreSQL"
            );
        }
        env.reject_unknown(&["READ_API_"])?;
        config.kafka_properties = env.kafka_properties()?;
        config.validate()?;
        // a default page larger than the largest is served as the largest
        config.default_page_size = config.default_page_size.min(config.max_page_size);
        Ok(config)
    }

    /// Checks the values make sense together (pure: no I/O).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (variable, value) in [
            (
                "READ_API_DATABASE_WAIT_TIMEOUT_MS",
                self.database_wait_timeout,
            ),
            (
                "READ_API_DATABASE_CONNECT_TIMEOUT_MS",
                self.database_connect_timeout,
            ),
            ("READ_API_STATEMENT_TIMEOUT_MS", self.statement_timeout),
            ("READ_API_STATUS_REFRESH_MS", self.status_refresh),
        ] {
            if value.is_zero() {
                return Err(invalid(variable, "must be at least 1"));
            }
        }
        if self.database_pool_size == 0 {
            return Err(invalid("READ_API_DATABASE_POOL_SIZE", "must be at least 1"));
        }
        if self.max_page_size == 0 || self.default_page_size == 0 {
            return Err(invalid(
                "READ_API_MAX_PAGE_SIZE",
                "page sizes must be at least 1",
            ));
        }
        if self.kafka_brokers.trim().is_empty() {
            return Err(invalid("KAFKA_BROKERS", "must not be empty"));
        }
        if !(self.elasticsearch_url.starts_with("http://")
            || self.elasticsearch_url.starts_with("https://"))
        {
            return Err(invalid(
                "ELASTICSEARCH_URL",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// The PostgreSQL pool's settings: the read API's own time limits (connect, wait for a
    /// free connection, statement) on [`factline_service::postgres::pool`].
    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_size: self.database_pool_size,
            connect_timeout: self.database_connect_timeout,
            wait_timeout: self.database_wait_timeout,
            recycle_timeout: self.database_connect_timeout,
            statement_timeout: Some(self.statement_timeout),
            application_name: "factline-read-api".into(),
        }
    }
}

/// Parses `HEX,HEX,...` (SHA-256 hashes of the accepted keys).
pub fn parse_key_hashes(text: &str) -> Result<Vec<[u8; 32]>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .enumerate()
        .map(|(index, entry)| {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(entry, &mut hash).map_err(|_| {
                format!("entry {index}: expected a SHA-256 hash as 64 hex characters")
            })?;
            Ok(hash)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_local_stack() {
        let config = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8090");
        assert_eq!(config.kafka_brokers, "127.0.0.1:9092");
        assert_eq!(config.max_page_size, 100);
        assert!(config.api_key_hashes.is_empty());
    }

    #[test]
    fn variables_are_read_and_checked() {
        let config = Config::from_vars(vars(&[
            ("READ_API_ADDR", "0.0.0.0:9000"),
            ("READ_API_TOPIC_PREFIX", "t1_"),
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL"),
            ("READ_API_KEYS_SHA256", &"ab".repeat(32)),
        ]))
        .unwrap();
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(config.index_prefix, "t1_");
        assert_eq!(config.kafka_properties["security.protocol"], "SSL");
        assert_eq!(config.api_key_hashes.len(), 1);
        let error = Config::from_vars(vars(&[("READ_API_KEYS_SHA256", "nothex")])).unwrap_err();
        assert_eq!(error.variable(), "READ_API_KEYS_SHA256");
        let error = Config::from_vars(vars(&[("READ_API_MAX_PAGE_SIZE", "x")])).unwrap_err();
        assert_eq!(error.variable(), "READ_API_MAX_PAGE_SIZE");
        let config = Config::from_vars(vars(&[("READ_API_STATEMENT_TIMEOUT_MS", "750")])).unwrap();
        assert_eq!(config.statement_timeout, Duration::from_millis(750));
        assert_eq!(config.database_wait_timeout, Duration::from_millis(2000));
        let error =
            Config::from_vars(vars(&[("READ_API_DATABASE_WAIT_TIMEOUT_MS", "0")])).unwrap_err();
        assert_eq!(error.variable(), "READ_API_DATABASE_WAIT_TIMEOUT_MS");
    }

    #[test]
    fn unknown_read_api_variables_are_rejected() {
        let error = Config::from_vars(vars(&[("READ_API_STATEMENT_TIMEOUT", "750")])).unwrap_err();
        assert_eq!(error.variable(), "READ_API_STATEMENT_TIMEOUT");
        assert!(error.to_string().contains("unknown setting"), "{error}");
        // the directory of projector files is gone (views come from PostgreSQL); scripts that
        // still set it are tolerated
        assert!(
            Config::from_vars(vars(&[("READ_API_DECLARATIVE_DIR", "projectors/config")])).is_ok()
        );
        // other prefixes are not the read API's to judge
        assert!(Config::from_vars(vars(&[("PROJECTOR_BATCH_MAX_EVENTS", "5")])).is_ok());
    }

    #[test]
    fn validate_is_pure_and_names_the_variable() {
        let mut config = Config::new(
            "postgres://x@127.0.0.1/db",
            "http://127.0.0.1:9200",
            "k:9092",
        );
        assert!(config.validate().is_ok());
        config.statement_timeout = Duration::ZERO;
        assert_eq!(
            config.validate().unwrap_err().variable(),
            "READ_API_STATEMENT_TIMEOUT_MS"
        );
        let mut config = Config::new("postgres://x@127.0.0.1/db", "localhost:9200", "k:9092");
        assert_eq!(
            config.validate().unwrap_err().variable(),
            "ELASTICSEARCH_URL"
        );
        config.elasticsearch_url = "https://es:9200".into();
        config.database_pool_size = 0;
        assert_eq!(
            config.validate().unwrap_err().variable(),
            "READ_API_DATABASE_POOL_SIZE"
        );
    }

    #[test]
    fn the_pool_keeps_the_read_apis_time_limits() {
        let config = Config::from_vars(vars(&[
            ("READ_API_DATABASE_POOL_SIZE", "3"),
            ("READ_API_STATEMENT_TIMEOUT_MS", "750"),
            ("READ_API_DATABASE_WAIT_TIMEOUT_MS", "300"),
            ("READ_API_DATABASE_CONNECT_TIMEOUT_MS", "400"),
        ]))
        .unwrap();
        let settings = config.pool_settings();
        assert_eq!(settings.max_size, 3);
        assert_eq!(settings.statement_timeout, Some(Duration::from_millis(750)));
        assert_eq!(settings.wait_timeout, Duration::from_millis(300));
        assert_eq!(settings.connect_timeout, Duration::from_millis(400));
        assert_eq!(settings.recycle_timeout, Duration::from_millis(400));
    }
}
