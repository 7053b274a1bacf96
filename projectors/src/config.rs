//! Projector configuration: one struct, defaults embedded, environment overrides read through
//! [`factline_service::Env`] like every service's, a pure [`Config::validate`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use factline_service::{Env, EnvError};

/// Everything a projector process needs; see [`Config::from_env`] for the variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Kafka bootstrap servers (`KAFKA_BROKERS`).
    pub kafka_brokers: String,
    /// The schema registry (`SCHEMA_REGISTRY_URL`).
    pub schema_registry_url: String,
    /// The PostgreSQL sink (`DATABASE_URL`); `options=-csearch_path=...` selects a schema.
    pub database_url: String,
    /// Where `/healthz` and `/metrics` are served (`PROJECTOR_ADDR`); none: no HTTP server.
    pub http_addr: Option<SocketAddr>,
    /// A batch is committed once it holds this many records (`PROJECTOR_BATCH_MAX_EVENTS`);
    /// none: the sink's default (2000; the archive's 20000, for larger objects).
    pub batch_max_events: Option<usize>,
    /// …or once its first record waited this long (`PROJECTOR_BATCH_MAX_WAIT_MS`); none: the
    /// sink's default (PostgreSQL 10 ms, Elasticsearch 100 ms, whose every batch ends in a
    /// refresh).
    pub batch_max_wait_ms: Option<u64>,
    /// Prepended to every topic name and to the consumer group (`PROJECTOR_TOPIC_PREFIX`), so
    /// tests and tenants can share one cluster.
    pub topic_prefix: String,
    /// First retry delay after a transient failure (`PROJECTOR_BACKOFF_INITIAL_MS`).
    pub backoff_initial_ms: u64,
    /// Retry delays double up to this cap (`PROJECTOR_BACKOFF_MAX_MS`).
    pub backoff_max_ms: u64,
    /// Size of the PostgreSQL connection pool (`PROJECTOR_DATABASE_POOL_SIZE`).
    pub database_pool_size: usize,
    /// Also commit offsets to Kafka, for tooling only: those of the batches committed in
    /// PostgreSQL, sent by librdkafka's auto-commit every `auto.commit.interval.ms` (5 s) and on
    /// revocation; positions in PostgreSQL stay the truth (`PROJECTOR_COMMIT_TO_KAFKA`).
    pub commit_to_kafka: bool,
    /// The Elasticsearch cluster of search projectors (`ELASTICSEARCH_URL`, may carry
    /// `user:password@`); required by [`crate::run_search`] only.
    pub elasticsearch_url: Option<String>,
    /// Prepended to every Elasticsearch index and alias name (`PROJECTOR_INDEX_PREFIX`);
    /// defaults to the topic prefix.
    pub index_prefix: Option<String>,
    /// The event archive (`ARCHIVE_*`, see [`factline_archive::ArchiveConfig`]), when
    /// `ARCHIVE_S3_BUCKET` is set: where the archiver writes, and where every projector reads
    /// history past Kafka's retention. Read and checked at start.
    pub archive: Option<factline_archive::ArchiveConfig>,
    /// Raw librdkafka properties (`KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL` ->
    /// `security.protocol=SSL`), applied to the consumer and the dead-letter producer.
    pub kafka_properties: BTreeMap<String, String>,

    // --- dedupe window (sink.rs) ---
    /// How long the PostgreSQL sink remembers an applied event id to skip the same event
    /// re-produced at another offset (`PROJECTOR_DEDUPE_WINDOW_SECS`, default 7 days). Older
    /// rows of `factline_projector_applied` are pruned; see `sink.rs` for what an older
    /// duplicate does.
    pub dedupe_window_secs: u64,
    // --- crash recovery and registry retries (membership.rs, decode.rs) ---
    /// Static group membership (`PROJECTOR_STATIC_MEMBERSHIP`, default true): each instance
    /// claims the lowest free slot N of its consumer group (a PostgreSQL session advisory lock
    /// held for the process's lifetime) and joins as `group.instance.id = {group}-{N}`, so a
    /// restarted process gets its partitions back at once. An explicit
    /// `KAFKA_PROPERTY_GROUP_INSTANCE_ID` is used as given instead (then it must be unique per
    /// running instance). False: dynamic membership.
    pub static_membership: bool,
    /// How long a record whose writer schema the registry cannot give (401, 403, 404 for the
    /// schema id, 5xx, timeouts, connection errors) is retried before it is dead-lettered
    /// (`PROJECTOR_REGISTRY_RETRY_MS`, default 300000; 0 dead-letters at once).
    pub registry_retry_ms: u64,
    /// With nothing to read for a moment, the partitions are paused this long between short
    /// probes, so an idle projector leaves the broker alone (`PROJECTOR_IDLE_PAUSE_MS`, default
    /// 100; 0 never pauses). The first record after a quiet spell is seen up to this much later;
    /// see [`crate::runtime::idle`].
    pub idle_pause_ms: u64,
    /// Once every partition is read to its end while records flow, the partitions are paused
    /// this long before the next fetch, so a consumer keeping up with a steady stream does not
    /// fetch again and again from a broker that answers an empty fetch at once
    /// (`PROJECTOR_FETCH_PACE_MS`, default 10; 0 never paces). A record is seen up to this much
    /// later; see [`crate::runtime::idle`].
    pub fetch_pace_ms: u64,
    // --- end of crash recovery and registry retries ---
    /// The key store that decrypts personal fields before `apply` (`FACTLINE_KEK`,
    /// `FACTLINE_KEK_FILE`, `FACTLINE_KEYS_*`; see `factline_keystore::config`).
    pub keys: factline_keystore::KeyConfig,
}

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable that cannot be read: missing, malformed, or an unknown `PROJECTOR_*` name.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A required variable is missing.
    #[error("{0} is not set")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("{name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// A configuration with the defaults and the given addresses.
    pub fn new(kafka_brokers: &str, schema_registry_url: &str, database_url: &str) -> Config {
        Config {
            kafka_brokers: kafka_brokers.to_owned(),
            schema_registry_url: schema_registry_url.to_owned(),
            database_url: database_url.to_owned(),
            http_addr: None,
            batch_max_events: None,
            batch_max_wait_ms: None,
            topic_prefix: String::new(),
            backoff_initial_ms: 100,
            backoff_max_ms: 10_000,
            database_pool_size: 4,
            commit_to_kafka: true,
            elasticsearch_url: None,
            index_prefix: None,
            kafka_properties: BTreeMap::new(),
            // --- dedupe window ---
            dedupe_window_secs: DEFAULT_DEDUPE_WINDOW_SECS,
            static_membership: true,
            registry_retry_ms: 300_000,
            idle_pause_ms: 100,
            fetch_pace_ms: 10,
            keys: factline_keystore::KeyConfig::default(),
            archive: None,
        }
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads configuration from `(name, value)` pairs (the environment, or a test's map)
    /// through [`Env`]: empty values count as unset, an unknown `PROJECTOR_*` variable is an
    /// error (a likely typo), `KAFKA_PROPERTY_*` pass through to librdkafka.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(
        vars: I,
    ) -> Result<Config, ConfigError> {
        let env = Env::from_vars(vars);
        let mut c = Config::new(
            &env.required("KAFKA_BROKERS")?,
            &env.required("SCHEMA_REGISTRY_URL")?,
            &env.required("DATABASE_URL")?,
        );
        c.http_addr = env.parse("PROJECTOR_ADDR")?;
        c.batch_max_events = env.parse("PROJECTOR_BATCH_MAX_EVENTS")?;
        c.batch_max_wait_ms = env.parse("PROJECTOR_BATCH_MAX_WAIT_MS")?;
        c.topic_prefix = env.parse_or("PROJECTOR_TOPIC_PREFIX", c.topic_prefix)?;
        c.backoff_initial_ms =
            env.parse_or("PROJECTOR_BACKOFF_INITIAL_MS", c.backoff_initial_ms)?;
        c.backoff_max_ms = env.parse_or("PROJECTOR_BACKOFF_MAX_MS", c.backoff_max_ms)?;
        c.database_pool_size =
            env.parse_or("PROJECTOR_DATABASE_POOL_SIZE", c.database_pool_size)?;
        c.commit_to_kafka = env
            .flag("PROJECTOR_COMMIT_TO_KAFKA")?
            .unwrap_or(c.commit_to_kafka);
        c.elasticsearch_url = env.get("ELASTICSEARCH_URL").map(str::to_owned);
        c.index_prefix = env.get("PROJECTOR_INDEX_PREFIX").map(str::to_owned);
        c.dedupe_window_secs =
            env.parse_or("PROJECTOR_DEDUPE_WINDOW_SECS", c.dedupe_window_secs)?;
        c.static_membership = env
            .flag("PROJECTOR_STATIC_MEMBERSHIP")?
            .unwrap_or(c.static_membership);
        c.registry_retry_ms = env.parse_or("PROJECTOR_REGISTRY_RETRY_MS", c.registry_retry_ms)?;
        c.idle_pause_ms = env.parse_or("PROJECTOR_IDLE_PAUSE_MS", c.idle_pause_ms)?;
        c.fetch_pace_ms = env.parse_or("PROJECTOR_FETCH_PACE_MS", c.fetch_pace_ms)?;
        c.keys =
            factline_keystore::KeyConfig::from_env(&env).map_err(|e| ConfigError::Invalid {
                name: "FACTLINE_KEK*",
                reason: e.to_string(),
            })?;
        c.archive = match env.get("ARCHIVE_S3_BUCKET") {
            Some(_) => Some(
                factline_archive::ArchiveConfig::from_env(&env).map_err(|e| {
                    ConfigError::Invalid {
                        name: "ARCHIVE_*",
                        reason: e.to_string(),
                    }
                })?,
            ),
            None => None,
        };
        // the declarative file, read by the binary's command line (`--config`)
        env.get("PROJECTOR_CONFIG");
        env.reject_unknown(&["PROJECTOR_", factline_keystore::config::ENV_PREFIX])?;
        c.kafka_properties = env.kafka_properties()?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the values without touching the network.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                name,
                reason: reason.to_owned(),
            })
        };
        if self.kafka_brokers.trim().is_empty() {
            return Err(ConfigError::Missing("KAFKA_BROKERS"));
        }
        if !(self.schema_registry_url.starts_with("http://")
            || self.schema_registry_url.starts_with("https://"))
        {
            return invalid("SCHEMA_REGISTRY_URL", "must be an http(s) URL");
        }
        if let Err(e) = self.database_url.parse::<tokio_postgres::Config>() {
            return invalid("DATABASE_URL", &e.to_string());
        }
        if self.batch_max_events == Some(0) {
            return invalid("PROJECTOR_BATCH_MAX_EVENTS", "must be at least 1");
        }
        if self.batch_max_wait_ms == Some(0) {
            return invalid("PROJECTOR_BATCH_MAX_WAIT_MS", "must be at least 1");
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return invalid(
                "PROJECTOR_BACKOFF_MAX_MS",
                "backoff must be positive and the cap at least the initial delay",
            );
        }
        if self.database_pool_size < 2 {
            return invalid("PROJECTOR_DATABASE_POOL_SIZE", "must be at least 2");
        }
        if let Some(url) = &self.elasticsearch_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid("ELASTICSEARCH_URL", "must be an http(s) URL");
            }
        }
        if self
            .index_prefix
            .as_deref()
            .unwrap_or_default()
            .chars()
            .any(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
        {
            return invalid(
                "PROJECTOR_INDEX_PREFIX",
                "index names take lowercase letters, digits, '_' and '-' only",
            );
        }
        // --- dedupe window ---
        if self.dedupe_window_secs == 0 {
            return invalid("PROJECTOR_DEDUPE_WINDOW_SECS", "must be at least 1");
        }
        for key in ["enable.auto.commit", "enable.auto.offset.store", "group.id"] {
            if self.kafka_properties.contains_key(key) {
                return invalid(
                    "KAFKA_PROPERTY_*",
                    &format!("{key} is owned by the projector runtime"),
                );
            }
        }
        Ok(())
    }

    /// The most records a batch holds before it is committed, given the sink's default.
    pub fn batch_max(&self, sink_default: usize) -> usize {
        self.batch_max_events.unwrap_or(sink_default).max(1)
    }

    /// The longest a batch waits before it is committed, given the sink's default.
    pub fn batch_max_wait(&self, sink_default: Duration) -> Duration {
        self.batch_max_wait_ms
            .map_or(sink_default, Duration::from_millis)
    }

    /// The Kafka topic consumed for a logical topic (`orders` -> `{prefix}orders`).
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.topic_prefix)
    }

    /// The prefix of Elasticsearch index and alias names.
    pub fn index_prefix(&self) -> &str {
        self.index_prefix.as_deref().unwrap_or(&self.topic_prefix)
    }

    /// The `group.instance.id` given explicitly (`KAFKA_PROPERTY_GROUP_INSTANCE_ID`), if any.
    pub fn explicit_instance_id(&self) -> Option<&str> {
        self.kafka_properties
            .get("group.instance.id")
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    /// The consumer group of a projector version: `{prefix}{name}-v{version}`.
    pub fn group_id(&self, projector: &str, version: u32) -> String {
        format!("{}{projector}-v{version}", self.topic_prefix)
    }
}

// --- dedupe window ---
/// The default of [`Config::dedupe_window_secs`]: 7 days, well beyond the write side's 24 hours
/// of idempotency-key memory, so a client retrying a day later is still deduplicated.
pub const DEFAULT_DEDUPE_WINDOW_SECS: u64 = 7 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(String, String)> {
        vec![
            ("KAFKA_BROKERS".into(), "k:9092".into()),
            ("SCHEMA_REGISTRY_URL".into(), "http://r:8081".into()),
            ("DATABASE_URL".into(), "postgres://u@h:5432/db".into()),
        ]
    }

    #[test]
    fn reads_defaults_and_overrides() {
        let mut vars = base();
        vars.push(("PROJECTOR_BATCH_MAX_EVENTS".into(), "50".into()));
        vars.push(("PROJECTOR_ADDR".into(), "127.0.0.1:9100".into()));
        vars.push(("KAFKA_PROPERTY_SECURITY_PROTOCOL".into(), "SSL".into()));
        let config = Config::from_vars(vars).unwrap();
        assert_eq!(config.batch_max(2000), 50);
        assert_eq!(config.batch_max_wait_ms, None);
        let sink_default = Duration::from_millis(7);
        assert_eq!(config.batch_max_wait(sink_default), sink_default);
        assert_eq!(config.http_addr, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            config.kafka_properties.get("security.protocol"),
            Some(&"SSL".to_owned())
        );
        assert_eq!(config.group_id("order_summary", 2), "order_summary-v2");
        assert_eq!(config.dedupe_window_secs, DEFAULT_DEDUPE_WINDOW_SECS);
        let mut vars = base();
        vars.push(("PROJECTOR_DEDUPE_WINDOW_SECS".into(), "3600".into()));
        assert_eq!(Config::from_vars(vars).unwrap().dedupe_window_secs, 3600);
        let mut vars = base();
        vars.push(("PROJECTOR_DEDUPE_WINDOW_SECS".into(), "0".into()));
        assert!(Config::from_vars(vars).is_err());
        assert!(config.static_membership);
        assert_eq!(config.registry_retry_ms, 300_000);
        assert_eq!(config.explicit_instance_id(), None);
    }

    #[test]
    fn membership_and_registry_retry_are_configurable() {
        let mut vars = base();
        vars.push(("PROJECTOR_STATIC_MEMBERSHIP".into(), "false".into()));
        vars.push(("PROJECTOR_REGISTRY_RETRY_MS".into(), "1500".into()));
        vars.push(("KAFKA_PROPERTY_GROUP_INSTANCE_ID".into(), "host-a".into()));
        let config = Config::from_vars(vars).unwrap();
        assert!(!config.static_membership);
        assert_eq!(config.registry_retry_ms, 1500);
        assert_eq!(config.explicit_instance_id(), Some("host-a"));
    }

    #[test]
    fn empty_values_count_as_unset_like_every_service() {
        let mut vars = base();
        vars.push(("PROJECTOR_ADDR".into(), "".into()));
        vars.push(("PROJECTOR_BATCH_MAX_EVENTS".into(), " ".into()));
        vars.push(("PROJECTOR_STATIC_MEMBERSHIP".into(), "no".into()));
        let config = Config::from_vars(vars).unwrap();
        assert_eq!(config.http_addr, None);
        assert_eq!(config.batch_max_events, None);
        assert_eq!(config.batch_max(2000), 2000);
        assert!(!config.static_membership);
        let mut vars = base();
        vars.push(("KAFKA_PROPERTY_".into(), "x".into()));
        assert!(matches!(
            Config::from_vars(vars),
            Err(ConfigError::Env(EnvError::Invalid { .. }))
        ));
    }

    #[test]
    fn the_archive_is_read_and_checked_at_start() {
        assert_eq!(Config::from_vars(base()).unwrap().archive, None);
        let mut vars = base();
        vars.push(("ARCHIVE_S3_BUCKET".into(), "factline-archive".into()));
        vars.push(("ARCHIVE_S3_ENDPOINT".into(), "http://127.0.0.1:8333".into()));
        let archive = Config::from_vars(vars.clone()).unwrap().archive.unwrap();
        assert_eq!(archive.bucket.bucket, "factline-archive");
        // a bad archive setting stops the start, for every projector (not only the archiver)
        vars.push(("ARCHIVE_OBJECT_MAX_RECORDS".into(), "0".into()));
        assert!(matches!(
            Config::from_vars(vars),
            Err(ConfigError::Invalid {
                name: "ARCHIVE_*",
                ..
            })
        ));
    }

    #[test]
    fn names_the_missing_variable() {
        let vars = base().into_iter().filter(|(k, _)| k != "DATABASE_URL");
        assert_eq!(
            Config::from_vars(vars).unwrap_err().to_string(),
            "DATABASE_URL is required"
        );
    }

    #[test]
    fn rejects_bad_values() {
        let mut vars = base();
        vars.push(("PROJECTOR_BATCH_MAX_EVENTS".into(), "0".into()));
        assert!(matches!(
            Config::from_vars(vars),
            Err(ConfigError::Invalid {
                name: "PROJECTOR_BATCH_MAX_EVENTS",
                ..
            })
        ));
        let mut vars = base();
        vars.push(("KAFKA_PROPERTY_ENABLE_AUTO_COMMIT".into(), "true".into()));
        assert!(Config::from_vars(vars).is_err());
        let mut vars = base();
        vars.push(("PROJECTOR_ADDR".into(), "nope".into()));
        assert!(Config::from_vars(vars).is_err());
        let mut vars = base();
        vars.push(("PROJECTOR_BATCH_SIZE".into(), "5".into()));
        assert!(matches!(
            Config::from_vars(vars),
            Err(ConfigError::Env(EnvError::Unknown { name, .. })) if name == "PROJECTOR_BATCH_SIZE"
        ));
    }
}
