//! What every request handler shares: configuration, the PostgreSQL pool, the Elasticsearch
//! client, the projector status board (with the declarative views) and the Kafka watermarks.

use std::sync::Arc;

use deadpool_postgres::Pool;
use factline_schemas::read_model::{versioned_index, versioned_table};
use factline_service::postgres::PoolBuildError;

use crate::config::Config;
use crate::db::{self, Db, Limits};
use crate::error::ApiError;
use crate::es::Search;
use crate::status::StatusBoard;
use crate::watermarks::Watermarks;

/// The shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// The configuration.
    pub config: Arc<Config>,
    /// PostgreSQL.
    pub pool: Pool,
    /// Elasticsearch.
    pub search: Search,
    /// Projector status, and the declarative views their projectors registered.
    pub board: StatusBoard,
    /// Live high watermarks.
    pub watermarks: Watermarks,
}

/// Why the read API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The PostgreSQL pool cannot be built (`DATABASE_URL`).
    #[error(transparent)]
    Database(#[from] PoolBuildError),
    /// The Kafka client cannot be created.
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

impl AppState {
    /// Builds the state and starts its background tasks (status refresh, watermarks).
    pub fn start(config: Config) -> Result<AppState, StartError> {
        let pool = factline_service::postgres::pool(&config.database_url, &config.pool_settings())?;
        let commits = (config.database_url.clone(), config.pool_settings());
        let board = StatusBoard::start(
            pool.clone(),
            limits(&config),
            config.status_refresh,
            Some(commits),
        );
        let watermarks = Watermarks::start(
            &config.kafka_brokers,
            &config.kafka_properties,
            board.clone(),
        )?;
        Ok(AppState {
            search: Search::new(&config.elasticsearch_url),
            config: Arc::new(config),
            pool,
            board,
            watermarks,
        })
    }

    /// The real name of an Elasticsearch alias.
    pub fn alias(&self, base: &str) -> String {
        format!("{}{base}", self.config.index_prefix)
    }

    /// The Elasticsearch index of `base` in `version` (the projector's naming,
    /// `{prefix}{base}_v{version}`), or the alias when the version is unknown.
    pub fn index(&self, base: &str, version: Option<i32>) -> String {
        match version.and_then(|v| u32::try_from(v).ok()) {
            Some(v) => versioned_index(&self.config.index_prefix, base, v),
            None => self.alias(base),
        }
    }

    /// The PostgreSQL table of view `base` in `version`, or the view when the version is
    /// unknown. Constants of the routes or names from validated declarative configurations only.
    pub fn table(&self, base: &str, version: Option<i32>) -> String {
        match version.and_then(|v| u32::try_from(v).ok()) {
            Some(v) => versioned_table(base, v),
            None => base.to_owned(),
        }
    }

    /// A PostgreSQL connection bounded by the configured time limits.
    pub async fn db(&self) -> Result<Db, ApiError> {
        db::connect(&self.pool, limits(&self.config)).await
    }
}

fn limits(config: &Config) -> Limits {
    Limits {
        wait: config.database_wait_timeout,
        connect: config.database_connect_timeout,
        statement: config.statement_timeout,
    }
}
