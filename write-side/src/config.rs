//! The write side's configuration: one struct, every field documented, defaults embedded,
//! overridden by environment variables, checked by a pure [`Config::validate`].

use crate::auth::{ApiKey, ApiKeyError};
use factline_keystore::KeyConfig;
use factline_service::{Env, EnvError};
use std::net::SocketAddr;
use std::time::Duration;

/// Everything the write side needs to run. Build it with [`Config::default`] (the documented
/// defaults) or [`Config::from_env`] (defaults overridden by the environment).
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server listens on. `WRITE_SIDE_ADDR`, default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// Kafka bootstrap servers. `KAFKA_BROKERS`, default `127.0.0.1:9092`.
    pub kafka_brokers: String,
    /// Extra librdkafka properties, applied last (they win over every setting here).
    /// `KAFKA_PROPERTY_<NAME>`: `KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL` -> `security.protocol=SSL`.
    /// Overrides that would weaken durability (`acks` other than `all`, idempotence off, more
    /// than 5 requests in flight, no retries, transactions, delivery timeouts) are refused.
    pub kafka_properties: Vec<(String, String)>,
    /// The schema registry's base URL. `SCHEMA_REGISTRY_URL`, default `http://127.0.0.1:8081`.
    pub schema_registry_url: String,
    /// A prefix put in front of every catalog topic (`t-1234-` + `orders`), for tests and
    /// shared clusters. `WRITE_SIDE_TOPIC_PREFIX`, default empty.
    pub topic_prefix: String,
    /// How long librdkafka may try to deliver one record before giving up (`message.timeout.ms`);
    /// bounds the longest a request waits for an acknowledgement.
    /// `WRITE_SIDE_MESSAGE_TIMEOUT_MS`, default 10000.
    pub message_timeout_ms: u64,
    /// How long the producer waits to fill a batch (`linger.ms`). `WRITE_SIDE_LINGER_MS`, default 5.
    pub linger_ms: u64,
    /// Producer compression codec (`compression.type`). `WRITE_SIDE_COMPRESSION`, default `lz4`.
    pub compression: String,
    /// Largest accepted body of `POST /commands/{name}`. `WRITE_SIDE_MAX_BODY_BYTES`,
    /// default 1 MiB.
    pub max_body_bytes: usize,
    /// Largest accepted body of the batch endpoint `POST /commands`.
    /// `WRITE_SIDE_MAX_BATCH_BODY_BYTES`, default 32 MiB.
    pub max_batch_body_bytes: usize,
    /// Most items in one batch. `WRITE_SIDE_MAX_BATCH_ITEMS`, default 10000.
    pub max_batch_items: usize,
    /// Most records produced but not yet acknowledged, over all requests.
    /// `WRITE_SIDE_MAX_IN_FLIGHT_RECORDS`, default 20000.
    pub max_in_flight_records: usize,
    /// Most bytes (key + value + headers) produced but not yet acknowledged.
    /// `WRITE_SIDE_MAX_IN_FLIGHT_BYTES`, default 64 MiB.
    pub max_in_flight_bytes: usize,
    /// How long a request may wait for in-flight budget before it gets `503`.
    /// `WRITE_SIDE_BUDGET_TIMEOUT_MS`, default 100.
    pub budget_timeout_ms: u64,
    /// The `Retry-After` value (seconds) sent with `503`. `WRITE_SIDE_RETRY_AFTER_SECS`, default 1.
    pub retry_after_secs: u64,
    /// Most idempotency keys remembered (least recently used forgotten first).
    /// `WRITE_SIDE_IDEMPOTENCY_CAPACITY`, default 100000.
    pub idempotency_capacity: usize,
    /// How long an idempotency key's answer is remembered. `WRITE_SIDE_IDEMPOTENCY_TTL_SECS`,
    /// default 86400 (one day).
    pub idempotency_ttl_secs: u64,
    /// Accepted API keys, stored as SHA-256 hashes, each optionally limited to some commands.
    /// `WRITE_SIDE_API_KEYS_SHA256`: comma-separated `HEX` or `HEX:Command1|Command2`.
    /// Empty (the default) turns authentication off, with a warning at start.
    pub api_keys: Vec<ApiKey>,
    /// Time limit of each readiness check (broker metadata, registry). `WRITE_SIDE_READY_TIMEOUT_MS`,
    /// default 2000.
    pub ready_timeout_ms: u64,
    /// At shutdown, how long to wait for in-flight records to be acknowledged.
    /// `WRITE_SIDE_SHUTDOWN_FLUSH_MS`, default 15000.
    pub shutdown_flush_ms: u64,
    /// The PostgreSQL database holding the key store (the data keys of personal data).
    /// `DATABASE_URL`, default `postgres://factline@127.0.0.1:55432/factline`.
    pub database_url: String,
    /// The secret keying the body fingerprints of idempotent event ids (see
    /// `crate::idempotency`): `WRITE_SIDE_FINGERPRINT_SECRET` (at least 32 characters) or
    /// `WRITE_SIDE_FINGERPRINT_SECRET_FILE` (a file holding it). Every instance must use the
    /// same one. Unset: the development file `.dev/factline-fingerprint-secret` under the
    /// working directory, created with a random secret when absent.
    pub fingerprint_secret: SecretSource,
    /// The key store: KEKs, its schema, the key cache (`FACTLINE_KEK`, `FACTLINE_KEK_FILE`,
    /// `FACTLINE_KEYS_*`; see `factline_keystore::config`).
    pub keys: KeyConfig,
    /// Whether fields the schemas mark personal are encrypted with their subject's data key
    /// before producing. `WRITE_SIDE_ENCRYPT_PERSONAL_DATA`, default `true`. `false` produces
    /// them in clear, with a warning at start: an erasure then cannot reach the log (only the
    /// read models). For deployments without an erasure duty, and to measure what encryption
    /// costs (`make bench`). Projectors read both.
    pub encrypt_personal_data: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            kafka_brokers: "127.0.0.1:9092".into(),
            kafka_properties: Vec::new(),
            schema_registry_url: "http://127.0.0.1:8081".into(),
            topic_prefix: String::new(),
            message_timeout_ms: 10_000,
            linger_ms: 5,
            compression: "lz4".into(),
            max_body_bytes: 1024 * 1024,
            max_batch_body_bytes: 32 * 1024 * 1024,
            max_batch_items: 10_000,
            max_in_flight_records: 20_000,
            max_in_flight_bytes: 64 * 1024 * 1024,
            budget_timeout_ms: 100,
            retry_after_secs: 1,
            idempotency_capacity: 100_000,
            idempotency_ttl_secs: 86_400,
            api_keys: Vec::new(),
            ready_timeout_ms: 2_000,
            shutdown_flush_ms: 15_000,
            database_url: "postgres://factline@127.0.0.1:55432/factline".into(),
            keys: KeyConfig::default(),
            fingerprint_secret: SecretSource::Development(DEV_FINGERPRINT_SECRET_FILE.into()),
            encrypt_personal_data: true,
        }
    }
}

/// The development fingerprint secret file, relative to the working directory.
pub const DEV_FINGERPRINT_SECRET_FILE: &str = ".dev/factline-fingerprint-secret";

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The secret itself.
    Inline(String),
    /// A file that must exist.
    File(std::path::PathBuf),
    /// Nothing configured: a development file, created with a random secret when absent.
    Development(std::path::PathBuf),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(..)"),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
            SecretSource::Development(p) => write!(f, "Development({})", p.display()),
        }
    }
}

impl SecretSource {
    /// The secret (at least 32 characters, surrounding whitespace ignored).
    pub fn load(&self) -> Result<String, ConfigError> {
        let secret = match self {
            SecretSource::Inline(secret) => secret.clone(),
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "WRITE_SIDE_FINGERPRINT_SECRET_FILE",
                    format!("{}: {e}", path.display()),
                )
            })?,
            SecretSource::Development(path) => {
                factline_keystore::config::read_or_create_private_file(path, || {
                    format!(
                        "{}{}\n",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    )
                })
                .map_err(|e| invalid("WRITE_SIDE_FINGERPRINT_SECRET_FILE", e.to_string()))?
            }
        };
        let secret = secret.trim().to_owned();
        if secret.chars().count() < 32 {
            return Err(invalid(
                "WRITE_SIDE_FINGERPRINT_SECRET",
                "must be at least 32 characters",
            ));
        }
        Ok(secret)
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value of the wrong form.
    #[error("{variable}: {message}")]
    Invalid {
        /// The environment variable (or field) concerned.
        variable: String,
        /// What is wrong with it.
        message: String,
    },
    /// A variable that cannot be read: missing, malformed, or an unknown `WRITE_SIDE_*` name
    /// (probably a typo).
    #[error(transparent)]
    Env(#[from] EnvError),
    /// An API key entry is malformed.
    #[error("WRITE_SIDE_API_KEYS_SHA256: {0}")]
    ApiKey(#[from] ApiKeyError),
}

fn invalid(variable: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        variable: variable.into(),
        message: message.into(),
    }
}

/// The environment variable that sets librdkafka property `name` (`acks` -> `KAFKA_PROPERTY_ACKS`).
pub fn property_variable(name: &str) -> String {
    format!("KAFKA_PROPERTY_{}", name.to_uppercase().replace('.', "_"))
}

/// Refuses a librdkafka override that would weaken "202 means the record is durably on the
/// log, once": fewer acknowledgements, no idempotence, reordering or duplicate-prone in-flight
/// limits, no retries, transactions (not supported), or delivery timeouts that bypass
/// `WRITE_SIDE_MESSAGE_TIMEOUT_MS` (the bound of every request's wait).
fn check_kafka_property(name: &str, value: &str) -> Result<(), ConfigError> {
    let variable = property_variable(name);
    let refuse = |message: &str| Err(invalid(&variable, format!("{value:?}: {message}")));
    let value_lc = value.trim().to_ascii_lowercase();
    match name {
        "acks" | "request.required.acks" if !matches!(value_lc.as_str(), "all" | "-1") => refuse(
            "the write side answers 202 only for records every in-sync replica has; \
             acks must stay all (or -1)",
        ),
        "enable.idempotence" if value_lc != "true" => refuse(
            "the idempotent producer is what keeps retries from duplicating or reordering \
             records; it must stay true",
        ),
        "max.in.flight.requests.per.connection" | "max.in.flight" => {
            match value_lc.parse::<u32>() {
                Ok(1..=5) => Ok(()),
                _ => refuse("at most 5 (and at least 1) with the idempotent producer"),
            }
        }
        "retries" | "message.send.max.retries" if value_lc.parse::<u64>().ok() == Some(0) => {
            refuse("a producer without retries turns every transient broker error into a failure; must be at least 1")
        }
        "transactional.id" => refuse("transactions are not supported by the write side"),
        "message.timeout.ms" | "delivery.timeout.ms" => {
            refuse("set WRITE_SIDE_MESSAGE_TIMEOUT_MS instead: it also bounds each request's wait")
        }
        _ => Ok(()),
    }
}

impl Config {
    /// The defaults overridden by the process environment, validated.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// The defaults overridden by `vars` (name, value), validated. Unknown `WRITE_SIDE_*`
    /// names are rejected; empty values count as unset.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let env = Env::from_vars(vars);
        let mut c = Config::default();
        if let Some(v) = env.get("KAFKA_BROKERS") {
            c.kafka_brokers = v.to_owned();
        }
        if let Some(v) = env.get("SCHEMA_REGISTRY_URL") {
            c.schema_registry_url = v.to_owned();
        }
        if let Some(v) = env.get("DATABASE_URL") {
            c.database_url = v.to_owned();
        }
        c.keys = KeyConfig::from_env(&env)?;
        match (
            env.get("WRITE_SIDE_FINGERPRINT_SECRET"),
            env.get("WRITE_SIDE_FINGERPRINT_SECRET_FILE"),
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "WRITE_SIDE_FINGERPRINT_SECRET",
                    "set it or WRITE_SIDE_FINGERPRINT_SECRET_FILE, not both",
                ))
            }
            (Some(secret), None) => c.fingerprint_secret = SecretSource::Inline(secret.to_owned()),
            (None, Some(file)) => c.fingerprint_secret = SecretSource::File(file.into()),
            (None, None) => {}
        }
        c.addr = env.parse_or("WRITE_SIDE_ADDR", c.addr)?;
        c.topic_prefix = env.parse_or("WRITE_SIDE_TOPIC_PREFIX", c.topic_prefix)?;
        c.message_timeout_ms =
            env.parse_or("WRITE_SIDE_MESSAGE_TIMEOUT_MS", c.message_timeout_ms)?;
        c.linger_ms = env.parse_or("WRITE_SIDE_LINGER_MS", c.linger_ms)?;
        c.compression = env.parse_or("WRITE_SIDE_COMPRESSION", c.compression)?;
        c.max_body_bytes = env.parse_or("WRITE_SIDE_MAX_BODY_BYTES", c.max_body_bytes)?;
        c.max_batch_body_bytes =
            env.parse_or("WRITE_SIDE_MAX_BATCH_BODY_BYTES", c.max_batch_body_bytes)?;
        c.max_batch_items = env.parse_or("WRITE_SIDE_MAX_BATCH_ITEMS", c.max_batch_items)?;
        c.max_in_flight_records =
            env.parse_or("WRITE_SIDE_MAX_IN_FLIGHT_RECORDS", c.max_in_flight_records)?;
        c.max_in_flight_bytes =
            env.parse_or("WRITE_SIDE_MAX_IN_FLIGHT_BYTES", c.max_in_flight_bytes)?;
        c.budget_timeout_ms = env.parse_or("WRITE_SIDE_BUDGET_TIMEOUT_MS", c.budget_timeout_ms)?;
        c.retry_after_secs = env.parse_or("WRITE_SIDE_RETRY_AFTER_SECS", c.retry_after_secs)?;
        c.idempotency_capacity =
            env.parse_or("WRITE_SIDE_IDEMPOTENCY_CAPACITY", c.idempotency_capacity)?;
        c.idempotency_ttl_secs =
            env.parse_or("WRITE_SIDE_IDEMPOTENCY_TTL_SECS", c.idempotency_ttl_secs)?;
        if let Some(v) = env.get("WRITE_SIDE_API_KEYS_SHA256") {
            c.api_keys = ApiKey::parse_list(v)?;
        }
        c.ready_timeout_ms = env.parse_or("WRITE_SIDE_READY_TIMEOUT_MS", c.ready_timeout_ms)?;
        c.shutdown_flush_ms = env.parse_or("WRITE_SIDE_SHUTDOWN_FLUSH_MS", c.shutdown_flush_ms)?;
        c.encrypt_personal_data =
            env.parse_or("WRITE_SIDE_ENCRYPT_PERSONAL_DATA", c.encrypt_personal_data)?;
        env.reject_unknown(&["WRITE_SIDE_", factline_keystore::config::ENV_PREFIX])?;
        c.kafka_properties = env.kafka_properties()?.into_iter().collect();
        c.validate()?;
        Ok(c)
    }

    /// Checks the values make sense together (pure: no I/O).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka_brokers.trim().is_empty() {
            return Err(invalid("KAFKA_BROKERS", "must not be empty"));
        }
        if !(self.schema_registry_url.starts_with("http://")
            || self.schema_registry_url.starts_with("https://"))
        {
            return Err(invalid(
                "SCHEMA_REGISTRY_URL",
                "must be an http:// or https:// URL",
            ));
        }
        let topic_ok = self
            .topic_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !topic_ok || self.topic_prefix.len() > 200 {
            return Err(invalid(
                "WRITE_SIDE_TOPIC_PREFIX",
                "only ASCII letters, digits, '.', '_' and '-', at most 200 characters",
            ));
        }
        let positive = [
            (
                "WRITE_SIDE_MESSAGE_TIMEOUT_MS",
                self.message_timeout_ms as usize,
            ),
            ("WRITE_SIDE_MAX_BODY_BYTES", self.max_body_bytes),
            ("WRITE_SIDE_MAX_BATCH_BODY_BYTES", self.max_batch_body_bytes),
            ("WRITE_SIDE_MAX_BATCH_ITEMS", self.max_batch_items),
            (
                "WRITE_SIDE_MAX_IN_FLIGHT_RECORDS",
                self.max_in_flight_records,
            ),
            ("WRITE_SIDE_MAX_IN_FLIGHT_BYTES", self.max_in_flight_bytes),
            ("WRITE_SIDE_IDEMPOTENCY_CAPACITY", self.idempotency_capacity),
            (
                "WRITE_SIDE_READY_TIMEOUT_MS",
                self.ready_timeout_ms as usize,
            ),
        ];
        for (variable, value) in positive {
            if value == 0 {
                return Err(invalid(variable, "must be greater than zero"));
            }
        }
        if self.max_in_flight_records > 10_000_000 {
            return Err(invalid(
                "WRITE_SIDE_MAX_IN_FLIGHT_RECORDS",
                "at most 10000000 (librdkafka's queue.buffering.max.messages limit)",
            ));
        }
        if self.max_in_flight_bytes < self.max_body_bytes {
            return Err(invalid(
                "WRITE_SIDE_MAX_IN_FLIGHT_BYTES",
                "must be at least WRITE_SIDE_MAX_BODY_BYTES",
            ));
        }
        if self.max_in_flight_bytes / 1024 > 2_097_151 {
            return Err(invalid(
                "WRITE_SIDE_MAX_IN_FLIGHT_BYTES",
                "at most 2 GiB (librdkafka's queue.buffering.max.kbytes limit)",
            ));
        }
        if self.message_timeout_ms > 300_000 {
            return Err(invalid(
                "WRITE_SIDE_MESSAGE_TIMEOUT_MS",
                "at most 300000: a request must never wait longer than that",
            ));
        }
        for (name, value) in &self.kafka_properties {
            check_kafka_property(name, value)?;
        }
        Ok(())
    }

    /// [`Config::message_timeout_ms`] as a duration.
    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    /// [`Config::budget_timeout_ms`] as a duration.
    pub fn budget_timeout(&self) -> Duration {
        Duration::from_millis(self.budget_timeout_ms)
    }

    /// [`Config::ready_timeout_ms`] as a duration.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready_timeout_ms)
    }
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
    fn the_fingerprint_secret_comes_from_one_place_and_is_long_enough() {
        let long = "0123456789abcdef0123456789abcdef";
        let c = Config::from_vars(vars(&[("WRITE_SIDE_FINGERPRINT_SECRET", long)])).unwrap();
        assert_eq!(c.fingerprint_secret.load().unwrap(), long);
        assert!(!format!("{c:?}").contains(long));
        let short = Config::from_vars(vars(&[("WRITE_SIDE_FINGERPRINT_SECRET", "short")])).unwrap();
        assert!(short.fingerprint_secret.load().is_err());
        assert!(Config::from_vars(vars(&[
            ("WRITE_SIDE_FINGERPRINT_SECRET", long),
            ("WRITE_SIDE_FINGERPRINT_SECRET_FILE", "/x"),
        ]))
        .is_err());
        let missing = Config::from_vars(vars(&[(
            "WRITE_SIDE_FINGERPRINT_SECRET_FILE",
            "/nonexistent/x",
        )]))
        .unwrap();
        assert!(missing.fingerprint_secret.load().is_err());
        let dev = std::env::temp_dir().join(format!("fp-{}/secret", uuid::Uuid::new_v4()));
        let created = SecretSource::Development(dev.clone()).load().unwrap();
        assert!(created.len() >= 32);
        assert_eq!(
            SecretSource::Development(dev.clone()).load().unwrap(),
            created
        );
        let _ = std::fs::remove_dir_all(dev.parent().unwrap());
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_vars(Vec::new()).unwrap();
        assert_eq!(config.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.max_batch_items, 10_000);
        assert!(config.api_keys.is_empty());
        assert!(config.encrypt_personal_data);
    }

    #[test]
    fn encryption_of_personal_data_can_be_turned_off_and_nothing_else_means_off() {
        let off = |v: &str| {
            Config::from_vars(vars(&[("WRITE_SIDE_ENCRYPT_PERSONAL_DATA", v)]))
                .map(|c| c.encrypt_personal_data)
        };
        assert_eq!(off("false").ok(), Some(false));
        assert_eq!(off("true").ok(), Some(true));
        assert!(off("no").is_err());
        assert!(off("0").is_err());
    }

    #[test]
    fn environment_overrides_and_kafka_properties() {
        let config = Config::from_vars(vars(&[
            ("WRITE_SIDE_ADDR", "0.0.0.0:9000"),
            ("KAFKA_BROKERS", "b1:9092,b2:9092"),
            ("WRITE_SIDE_MAX_BATCH_ITEMS", "5"),
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL"),
            ("WRITE_SIDE_TOPIC_PREFIX", "t-1-"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(config.kafka_brokers, "b1:9092,b2:9092");
        assert_eq!(config.max_batch_items, 5);
        assert_eq!(config.topic_prefix, "t-1-");
        assert_eq!(
            config.kafka_properties,
            vec![("security.protocol".to_string(), "SSL".to_string())]
        );
    }

    #[test]
    fn bad_values_and_unknown_settings_are_rejected() {
        for bad in [
            vars(&[("WRITE_SIDE_ADDR", "nowhere")]),
            vars(&[("WRITE_SIDE_MAX_BATCH_ITEMS", "0")]),
            vars(&[("WRITE_SIDE_MAX_BATCH_ITEMS", "-3")]),
            vars(&[("SCHEMA_REGISTRY_URL", "localhost:8081")]),
            vars(&[("WRITE_SIDE_TOPIC_PREFIX", "a b")]),
            vars(&[("WRITE_SIDE_MAX_BODY_SIZE", "10")]),
            vars(&[("WRITE_SIDE_API_KEYS_SHA256", "nothex")]),
        ] {
            assert!(Config::from_vars(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durability_weakening_kafka_properties_are_refused_naming_the_variable() {
        for (variable, value) in [
            ("KAFKA_PROPERTY_ACKS", "1"),
            ("KAFKA_PROPERTY_ACKS", "0"),
            ("KAFKA_PROPERTY_REQUEST_REQUIRED_ACKS", "1"),
            ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "false"),
            ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "0"),
            ("KAFKA_PROPERTY_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION", "6"),
            ("KAFKA_PROPERTY_MAX_IN_FLIGHT", "100"),
            ("KAFKA_PROPERTY_MAX_IN_FLIGHT", "many"),
            ("KAFKA_PROPERTY_RETRIES", "0"),
            ("KAFKA_PROPERTY_MESSAGE_SEND_MAX_RETRIES", "0"),
            ("KAFKA_PROPERTY_TRANSACTIONAL_ID", "tx-1"),
            ("KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS", "900000"),
            ("KAFKA_PROPERTY_DELIVERY_TIMEOUT_MS", "1000"),
        ] {
            let error = Config::from_vars(vars(&[(variable, value)]))
                .expect_err(&format!("{variable}={value} must be refused"));
            let message = error.to_string();
            assert!(message.starts_with(variable), "{message}");
        }
        // The same check on a config built in code.
        let config = Config {
            kafka_properties: vec![("acks".into(), "1".into())],
            ..Config::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("KAFKA_PROPERTY_ACKS"));
    }

    #[test]
    fn kafka_properties_that_keep_the_guarantee_are_accepted() {
        for (variable, value) in [
            ("KAFKA_PROPERTY_ACKS", "all"),
            ("KAFKA_PROPERTY_ACKS", "-1"),
            ("KAFKA_PROPERTY_ACKS", "ALL"),
            ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "true"),
            ("KAFKA_PROPERTY_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION", "5"),
            ("KAFKA_PROPERTY_MAX_IN_FLIGHT", "1"),
            ("KAFKA_PROPERTY_RETRIES", "10"),
            ("KAFKA_PROPERTY_ENABLE_GAPLESS_GUARANTEE", "true"),
            ("KAFKA_PROPERTY_LINGER_MS", "20"),
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
        ] {
            let result = Config::from_vars(vars(&[(variable, value)]));
            assert!(result.is_ok(), "{variable}={value}: {:?}", result.err());
        }
    }
}
