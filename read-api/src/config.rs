//! The read API's configuration, read from environment variables (defaults are the local
//! stack's addresses, see README.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: String,
    /// What is wrong with it.
    pub message: String,
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
    /// Where the declarative projection files are. `READ_API_DECLARATIVE_DIR`, default
    /// `projectors/config`.
    pub declarative_dir: Option<PathBuf>,
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
            declarative_dir: None,
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

    /// Reads the given variables (the environment, or a test's map).
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Config, ConfigError> {
        let vars: BTreeMap<String, String> = vars.into_iter().collect();
        let get = |name: &str, default: &str| {
            vars.get(name)
                .cloned()
                .unwrap_or_else(|| default.to_owned())
        };
        let mut config = Config::new(
            &get(
                "DATABASE_URL",
                "postgres://factline@127.0.0.1:55432/factline",
            ),
            &get("ELASTICSEARCH_URL", "http://127.0.0.1:9200"),
            &get("KAFKA_BROKERS", "127.0.0.1:9092"),
        );
        config.addr = parse(&vars, "READ_API_ADDR", config.addr)?;
        config.database_pool_size = parse(
            &vars,
            "READ_API_DATABASE_POOL_SIZE",
            config.database_pool_size,
        )?;
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
        ] {
            let ms: u64 = parse(&vars, variable, field.as_millis() as u64)?;
            if ms == 0 {
                return Err(ConfigError {
                    variable: variable.into(),
                    message: "must be at least 1".into(),
                });
            }
            *field = Duration::from_millis(ms);
        }
        config.topic_prefix = get("READ_API_TOPIC_PREFIX", "");
        config.index_prefix = vars
            .get("READ_API_INDEX_PREFIX")
            .cloned()
            .unwrap_or_else(|| config.topic_prefix.clone());
        config.declarative_dir = Some(PathBuf::from(get(
            "READ_API_DECLARATIVE_DIR",
            "projectors/config",
        )));
        let timeout_ms: u64 = parse(&vars, "READ_API_CONSISTENCY_TIMEOUT_MS", 5000)?;
        config.consistency_timeout = Duration::from_millis(timeout_ms);
        config.max_page_size = parse(&vars, "READ_API_MAX_PAGE_SIZE", config.max_page_size)?;
        config.default_page_size = parse(
            &vars,
            "READ_API_DEFAULT_PAGE_SIZE",
            config.default_page_size,
        )?;
        if let Some(keys) = vars.get("READ_API_KEYS_SHA256") {
            config.api_key_hashes = parse_key_hashes(keys).map_err(|message| ConfigError {
                variable: "READ_API_KEYS_SHA256".into(),
                message,
            })?;
        }
        for (name, value) in &vars {
            if let Some(property) = name.strip_prefix("KAFKA_PROPERTY_") {
                config
                    .kafka_properties
                    .insert(property.to_lowercase().replace('_', "."), value.clone());
            }
        }
        if config.max_page_size == 0 || config.default_page_size == 0 {
            return Err(ConfigError {
                variable: "READ_API_MAX_PAGE_SIZE".into(),
                message: "page sizes must be at least 1".into(),
            });
        }
        config.default_page_size = config.default_page_size.min(config.max_page_size);
        Ok(config)
    }
}

fn parse<T: std::str::FromStr>(
    vars: &BTreeMap<String, String>,
    name: &str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match vars.get(name) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError {
            variable: name.to_owned(),
            message: format!("{value:?}: {e}"),
        }),
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
        assert_eq!(error.variable, "READ_API_KEYS_SHA256");
        let error = Config::from_vars(vars(&[("READ_API_MAX_PAGE_SIZE", "x")])).unwrap_err();
        assert_eq!(error.variable, "READ_API_MAX_PAGE_SIZE");
        let config = Config::from_vars(vars(&[("READ_API_STATEMENT_TIMEOUT_MS", "750")])).unwrap();
        assert_eq!(config.statement_timeout, Duration::from_millis(750));
        assert_eq!(config.database_wait_timeout, Duration::from_millis(2000));
        let error =
            Config::from_vars(vars(&[("READ_API_DATABASE_WAIT_TIMEOUT_MS", "0")])).unwrap_err();
        assert_eq!(error.variable, "READ_API_DATABASE_WAIT_TIMEOUT_MS");
    }
}
