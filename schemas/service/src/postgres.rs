//! The PostgreSQL connection pool every service uses: built from `DATABASE_URL` with bounded
//! waits everywhere, so a database that stops answering turns into errors after a known time
//! instead of hung requests, and TLS when the URL asks for it (`sslmode=require`).
//!
//! The bounds: connecting (`connect_timeout`), waiting for a free connection
//! (`wait_timeout`), checking a returned connection (`recycle_timeout`) and, when set, every
//! statement on the server (`statement_timeout`, sent as the session's `statement_timeout`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use postgres_native_tls::MakeTlsConnector;

/// How a pool connects and how long anything may wait.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Connections at most.
    pub max_size: usize,
    /// Longest wait for a connection to be established.
    pub connect_timeout: Duration,
    /// Longest wait for a free connection when all are in use.
    pub wait_timeout: Duration,
    /// Longest check of a connection returned to the pool.
    pub recycle_timeout: Duration,
    /// Longest any statement may run on the server; `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
    /// `application_name` shown in `pg_stat_activity` (the service's name).
    pub application_name: String,
}

impl PoolSettings {
    /// Sensible bounds for a service called `application_name` with `max_size` connections:
    /// 5 s to connect, 10 s to wait for a connection, 5 s to recycle, no statement limit.
    pub fn new(application_name: &str, max_size: usize) -> PoolSettings {
        PoolSettings {
            max_size,
            connect_timeout: Duration::from_secs(5),
            wait_timeout: Duration::from_secs(10),
            recycle_timeout: Duration::from_secs(5),
            statement_timeout: None,
            application_name: application_name.to_owned(),
        }
    }
}

/// A pool that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolBuildError {
    /// `DATABASE_URL` is not a PostgreSQL connection string.
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    Url(#[source] tokio_postgres::Error),
    /// The TLS connector could not be set up.
    #[error("cannot set up TLS for PostgreSQL")]
    Tls(#[source] native_tls::Error),
    /// The pool rejected its settings.
    #[error("cannot build the PostgreSQL pool")]
    Build(#[source] deadpool_postgres::BuildError),
}

/// The connection configuration and TLS connector `settings` ask for.
fn configure(
    database_url: &str,
    settings: &PoolSettings,
) -> Result<(tokio_postgres::Config, MakeTlsConnector), PoolBuildError> {
    let mut config: tokio_postgres::Config = database_url.parse().map_err(PoolBuildError::Url)?;
    config.connect_timeout(settings.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name(&settings.application_name);
    }
    if let Some(limit) = settings.statement_timeout {
        let options = with_statement_timeout(config.get_options(), limit);
        config.options(&options);
    }
    let tls = native_tls::TlsConnector::new().map_err(PoolBuildError::Tls)?;
    Ok((config, MakeTlsConnector::new(tls)))
}

/// A connection of its own, outside any pool, configured like the pool's (for a session that
/// must stay open: `LISTEN`).
pub type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    postgres_native_tls::TlsStream<tokio_postgres::Socket>,
>;

/// Connects once, as the pool would (timeouts, application name, TLS); the caller drives the
/// returned [`Connection`].
pub async fn connect(
    database_url: &str,
    settings: &PoolSettings,
) -> Result<(tokio_postgres::Client, Connection), ConnectError> {
    let (config, tls) = configure(database_url, settings)?;
    Ok(config.connect(tls).await?)
}

/// A single connection that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or TLS set-up is wrong.
    #[error(transparent)]
    Setup(#[from] PoolBuildError),
    /// The server could not be reached or refused.
    #[error("cannot connect to PostgreSQL")]
    Connect(#[from] tokio_postgres::Error),
}

/// Parses `database_url` and builds a pool with `settings`. Connections are made lazily.
pub fn pool(database_url: &str, settings: &PoolSettings) -> Result<Pool, PoolBuildError> {
    let (config, tls) = configure(database_url, settings)?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.max_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(settings.connect_timeout))
        .wait_timeout(Some(settings.wait_timeout))
        .recycle_timeout(Some(settings.recycle_timeout))
        .build()
        .map_err(PoolBuildError::Build)
}

/// `options` (the URL's own, e.g. `-csearch_path=s1`) with `statement_timeout` added, so
/// the limit never replaces what the URL asks for.
fn with_statement_timeout(options: Option<&str>, limit: Duration) -> String {
    let setting = format!("-c statement_timeout={}", limit.as_millis());
    match options {
        Some(existing) if !existing.trim().is_empty() => format!("{existing} {setting}"),
        _ => setting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_timeout_joins_the_urls_options() {
        let limit = Duration::from_millis(1500);
        assert_eq!(
            with_statement_timeout(None, limit),
            "-c statement_timeout=1500"
        );
        assert_eq!(
            with_statement_timeout(Some("-csearch_path=s1"), limit),
            "-csearch_path=s1 -c statement_timeout=1500"
        );
    }

    #[test]
    fn a_malformed_url_is_an_error_naming_the_variable() {
        let error = pool(
            "postgres://user@host:notaport/db",
            &PoolSettings::new("test", 2),
        )
        .unwrap_err();
        assert!(error.to_string().contains("DATABASE_URL"), "{error}");
    }

    #[tokio::test]
    async fn a_pool_is_built_without_connecting() {
        // Nothing listens on port 1: building must not connect, only using it does.
        let pool = pool(
            "postgres://nobody@127.0.0.1:1/none",
            &PoolSettings::new("test", 2),
        )
        .unwrap();
        assert_eq!(pool.status().max_size, 2);
        assert!(pool.get().await.is_err());
    }
}
