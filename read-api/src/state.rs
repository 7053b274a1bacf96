//! What every request handler shares: configuration, the PostgreSQL pool, the Elasticsearch
//! client, the projector status board, the Kafka watermarks and the declarative views.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::Config;
use crate::db::{self, Db, Limits};
use crate::error::ApiError;
use crate::es::Search;
use crate::status::StatusBoard;
use crate::views::Views;
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
    /// Projector status.
    pub board: StatusBoard,
    /// Live high watermarks.
    pub watermarks: Watermarks,
    /// Declarative projections with read endpoints.
    pub views: Arc<Views>,
}

/// Why the read API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `DATABASE_URL` is not a PostgreSQL URL.
    #[error("DATABASE_URL: {0}")]
    Database(String),
    /// The Kafka client cannot be created.
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A declarative projection file is invalid.
    #[error("declarative projections: {0}")]
    Views(String),
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
        let mut pg: tokio_postgres::Config = config
            .database_url
            .parse()
            .map_err(|e: tokio_postgres::Error| StartError::Database(e.to_string()))?;
        let options = db::with_statement_timeout(pg.get_options(), config.statement_timeout);
        pg.options(&options);
        pg.connect_timeout(config.database_connect_timeout);
        let manager = Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.database_pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(config.database_connect_timeout))
            .recycle_timeout(Some(config.database_connect_timeout))
            .wait_timeout(Some(config.database_wait_timeout))
            .build()
            .map_err(|e| StartError::Database(e.to_string()))?;
        let views = match &config.declarative_dir {
            Some(dir) => Views::load(dir).map_err(StartError::Views)?,
            None => Views::default(),
        };
        let board = StatusBoard::start(pool.clone(), limits(&config), config.status_refresh);
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
            views: Arc::new(views),
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
            Some(v) => factline_projectors::search::index::Indices::new(
                &self.config.index_prefix,
                v,
                Vec::new(),
            )
            .index_of(base, v),
            None => self.alias(base),
        }
    }

    /// The PostgreSQL table of view `base` in `version`, or the view when the version is
    /// unknown. Constants of the routes or names from the declarative files only.
    pub fn table(&self, base: &str, version: Option<i32>) -> String {
        match version.and_then(|v| u32::try_from(v).ok()) {
            Some(v) => factline_projectors::versioned_table(base, v),
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
