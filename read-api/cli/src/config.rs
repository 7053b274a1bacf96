//! Where the services are: read from the same environment variables as the services
//! (through `factline-service`'s [`Env`]), with the defaults `make up` uses, and overridden by
//! the command line's global flags.
//!
//! | setting | flag | variables, first set wins | default |
//! |---|---|---|---|
//! | read API | `--read-api` | `FACTLINE_READ_API_URL`, `http://` + `READ_API_ADDR` | `http://127.0.0.1:8090` |
//! | write side | `--write-side` | `FACTLINE_WRITE_SIDE_URL`, `http://` + `WRITE_SIDE_ADDR` | `http://127.0.0.1:8080` |
//! | PostgreSQL | `--database-url` | `DATABASE_URL` | `postgres://factline@127.0.0.1:55432/factline` |
//! | Kafka | `--kafka-brokers` | `KAFKA_BROKERS`, plus `KAFKA_PROPERTY_*` | `127.0.0.1:9092` |
//! | registry | `--schema-registry` | `SCHEMA_REGISTRY_URL` | `http://127.0.0.1:8081` |
//! | read API key | | `FACTLINE_READ_API_KEY` | none |
//! | write side key | | `FACTLINE_WRITE_SIDE_KEY` | none |
//! | dedupe window | | `PROJECTOR_DEDUPE_WINDOW_SECS` (the projectors' own) | 7 days |
//! | key store schema | | `FACTLINE_KEYS_DB_SCHEMA` (the services' own) | `factline_keys` |
//!
//! The CLI's own variables start with `FACTLINE_`, never `READ_API_` or `WRITE_SIDE_`: those
//! services reject any unknown variable under their prefix, so a `READ_API_URL` exported in
//! an operator's shell would stop the read API from starting.

use std::collections::BTreeMap;

use factline_service::env::{Env, EnvError};

use crate::error::CliError;

/// The read API's default address.
pub const DEFAULT_READ_API: &str = "http://127.0.0.1:8090";
/// The write side's default address.
pub const DEFAULT_WRITE_SIDE: &str = "http://127.0.0.1:8080";
/// PostgreSQL's default URL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://factline@127.0.0.1:55432/factline";
/// Kafka's default broker list.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";
/// The registry's default URL.
pub const DEFAULT_SCHEMA_REGISTRY: &str = "http://127.0.0.1:8081";
/// The projectors' default dedupe window (their `DEFAULT_DEDUPE_WINDOW_SECS`).
pub const DEFAULT_DEDUPE_WINDOW_SECS: u64 = 7 * 24 * 3600;

/// Overrides from the command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// The read API's base URL [env: FACTLINE_READ_API_URL, READ_API_ADDR]
    #[arg(long, global = true, value_name = "URL")]
    pub read_api: Option<String>,
    /// The write side's base URL [env: FACTLINE_WRITE_SIDE_URL, WRITE_SIDE_ADDR]
    #[arg(long, global = true, value_name = "URL")]
    pub write_side: Option<String>,
    /// PostgreSQL, where the projectors keep their bookkeeping [env: DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Kafka's bootstrap servers [env: KAFKA_BROKERS]
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub kafka_brokers: Option<String>,
    /// The schema registry's URL [env: SCHEMA_REGISTRY_URL]
    #[arg(long, global = true, value_name = "URL")]
    pub schema_registry: Option<String>,
}

/// Every address and credential the commands may need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The read API's base URL, without a trailing slash.
    pub read_api: String,
    /// The write side's base URL, without a trailing slash.
    pub write_side: String,
    /// PostgreSQL.
    pub database_url: String,
    /// Kafka's bootstrap servers.
    pub kafka_brokers: String,
    /// librdkafka properties from `KAFKA_PROPERTY_*`.
    pub kafka_properties: BTreeMap<String, String>,
    /// The schema registry.
    pub schema_registry: String,
    /// Bearer key for the read API.
    pub read_api_key: Option<String>,
    /// Bearer key for the write side.
    pub write_side_key: Option<String>,
    /// The projectors' dedupe window, in seconds.
    pub dedupe_window_secs: u64,
    /// The key store's PostgreSQL schema.
    pub keys_db_schema: String,
}

impl Settings {
    /// Reads `env`, then applies `overrides`.
    pub fn load(env: &Env, overrides: &Overrides) -> Result<Settings, CliError> {
        Settings::read(env, overrides).map_err(|e| CliError::Config(e.to_string()))
    }

    fn read(env: &Env, overrides: &Overrides) -> Result<Settings, EnvError> {
        let url = |flag: &Option<String>, full: &str, addr: &str, default: &str| {
            let chosen = flag
                .clone()
                .or_else(|| env.get(full).map(str::to_owned))
                .or_else(|| env.get(addr).map(|a| format!("http://{a}")))
                .unwrap_or_else(|| default.to_owned());
            base_url(&chosen)
        };
        let plain = |flag: &Option<String>, name: &str, default: &str| {
            flag.clone()
                .or_else(|| env.get(name).map(str::to_owned))
                .unwrap_or_else(|| default.to_owned())
        };
        let settings = Settings {
            read_api: url(
                &overrides.read_api,
                "FACTLINE_READ_API_URL",
                "READ_API_ADDR",
                DEFAULT_READ_API,
            )
            .map_err(|reason| EnvError::invalid("read API URL", reason))?,
            write_side: url(
                &overrides.write_side,
                "FACTLINE_WRITE_SIDE_URL",
                "WRITE_SIDE_ADDR",
                DEFAULT_WRITE_SIDE,
            )
            .map_err(|reason| EnvError::invalid("write side URL", reason))?,
            database_url: plain(
                &overrides.database_url,
                "DATABASE_URL",
                DEFAULT_DATABASE_URL,
            ),
            kafka_brokers: plain(
                &overrides.kafka_brokers,
                "KAFKA_BROKERS",
                DEFAULT_KAFKA_BROKERS,
            ),
            kafka_properties: env.kafka_properties()?,
            schema_registry: plain(
                &overrides.schema_registry,
                "SCHEMA_REGISTRY_URL",
                DEFAULT_SCHEMA_REGISTRY,
            ),
            read_api_key: env.get("FACTLINE_READ_API_KEY").map(str::to_owned),
            write_side_key: env.get("FACTLINE_WRITE_SIDE_KEY").map(str::to_owned),
            dedupe_window_secs: env
                .parse_or("PROJECTOR_DEDUPE_WINDOW_SECS", DEFAULT_DEDUPE_WINDOW_SECS)?,
            keys_db_schema: plain(
                &None,
                "FACTLINE_KEYS_DB_SCHEMA",
                &factline_keystore::KeyConfig::default().db_schema,
            ),
        };
        Ok(settings)
    }
}

/// `text` as an HTTP base URL without a trailing slash, or why not.
fn base_url(text: &str) -> Result<String, String> {
    let url = text.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vars: &[(&str, &str)], overrides: Overrides) -> Result<Settings, CliError> {
        Settings::load(&Env::from_vars(vars.iter().copied()), &overrides)
    }

    #[test]
    fn defaults_are_what_make_up_uses() {
        let s = load(&[], Overrides::default()).unwrap();
        assert_eq!(s.read_api, DEFAULT_READ_API);
        assert_eq!(s.write_side, DEFAULT_WRITE_SIDE);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.kafka_brokers, DEFAULT_KAFKA_BROKERS);
        assert_eq!(s.dedupe_window_secs, DEFAULT_DEDUPE_WINDOW_SECS);
    }

    #[test]
    fn the_services_addresses_then_full_urls_then_flags() {
        let vars = [
            ("READ_API_ADDR", "10.0.0.1:8090"),
            ("WRITE_SIDE_ADDR", "10.0.0.2:8080"),
            ("FACTLINE_WRITE_SIDE_URL", "https://write.example/"),
            ("KAFKA_PROPERTY_SECURITY_PROTOCOL", "SSL"),
            ("PROJECTOR_DEDUPE_WINDOW_SECS", "60"),
        ];
        let s = load(&vars, Overrides::default()).unwrap();
        assert_eq!(s.read_api, "http://10.0.0.1:8090");
        assert_eq!(s.write_side, "https://write.example");
        assert_eq!(s.kafka_properties["security.protocol"], "SSL");
        assert_eq!(s.dedupe_window_secs, 60);
        let flags = Overrides {
            read_api: Some("http://flag:1".into()),
            ..Overrides::default()
        };
        assert_eq!(load(&vars, flags).unwrap().read_api, "http://flag:1");
    }

    #[test]
    fn a_bad_setting_is_one_clear_line() {
        let e = load(
            &[("FACTLINE_READ_API_URL", "localhost:8090")],
            Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "read API URL: \"localhost:8090\" is not an http:// or https:// URL"
        );
        assert_eq!(e.exit_code(), crate::error::EXIT_CONFIG);
        let e = load(
            &[("PROJECTOR_DEDUPE_WINDOW_SECS", "a week")],
            Overrides::default(),
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("PROJECTOR_DEDUPE_WINDOW_SECS"),
            "{e}"
        );
    }
}
