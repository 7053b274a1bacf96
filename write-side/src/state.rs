//! The state every handler shares: configuration, catalog, codec, producer, budget, idempotency
//! store, API keys, metrics and the generated OpenAPI document.

use crate::auth::ApiKeys;
use crate::budget::Budget;
use crate::config::Config;
use crate::idempotency::IdempotencyStore;
use crate::ingest::Accepted;
use crate::producer::Kafka;
use crate::telemetry::{self, RequestMetrics};
use factline_keystore::FieldCrypto;
use factline_schemas::{Catalog, EventCodec};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The Kafka producer cannot be created (bad librdkafka property, say).
    #[error("cannot create the kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The HTTP client for the registry cannot be built.
    #[error("cannot create the http client: {0}")]
    Http(#[from] reqwest::Error),
    /// The listening socket cannot be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
    /// The key-encryption keys cannot be loaded.
    #[error(transparent)]
    Keys(#[from] factline_keystore::KeyConfigError),
    /// The key store's PostgreSQL pool cannot be built (a malformed `DATABASE_URL`).
    #[error("DATABASE_URL: {0}")]
    Database(#[from] factline_service::postgres::PoolBuildError),
}

/// The shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

/// What [`AppState`] holds.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The command catalog (topics prefixed with `config.topic_prefix`).
    pub catalog: Catalog,
    /// Avro encoding through the registry.
    pub codec: EventCodec,
    /// Encryption of personal fields and erasure of subjects (the key store).
    pub crypto: FieldCrypto,
    /// The producer.
    pub kafka: Kafka,
    /// The in-flight budget.
    pub budget: Budget,
    /// The key of body fingerprints in idempotent event ids.
    pub fingerprint_key: crate::idempotency::FingerprintKey,
    /// Answers remembered per idempotency key.
    pub idempotency: IdempotencyStore<Accepted>,
    /// Accepted API keys.
    pub api_keys: ApiKeys,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The per-request metrics' handles.
    pub request_metrics: RequestMetrics,
    /// HTTP client for the registry readiness check.
    pub http: reqwest::Client,
    /// `/openapi.json`.
    pub openapi: serde_json::Value,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state from a configuration (validated here). Must run inside a Tokio runtime.
    pub fn new(config: Config) -> Result<AppState, StartError> {
        config.validate()?;
        let catalog = Catalog::builtin().with_topic_prefix(&config.topic_prefix);
        let codec = EventCodec::with_catalog(&config.schema_registry_url, catalog.clone());
        let kafka = Kafka::new(&config)?;
        let pool = factline_service::postgres::pool(
            &config.database_url,
            &factline_service::postgres::PoolSettings::new("factline-write-side-keys", 8),
        )?;
        // The topic prefix names a deployment on a shared cluster: it scopes subjects too.
        let fingerprint_key =
            crate::idempotency::FingerprintKey::new(config.fingerprint_secret.load()?.as_bytes());
        let crypto = factline_keystore::field_crypto(&config.keys, pool)?
            .with_subject_prefix(&config.topic_prefix);
        // The recorder first: the budget keeps handles to its gauges.
        let metrics = telemetry::metrics_handle();
        let budget = Budget::new(
            config.max_in_flight_records,
            config.max_in_flight_bytes,
            config.budget_timeout(),
        );
        let idempotency = IdempotencyStore::new(
            config.idempotency_capacity,
            Duration::from_secs(config.idempotency_ttl_secs),
        );
        if !config.encrypt_personal_data {
            tracing::warn!(
                "WRITE_SIDE_ENCRYPT_PERSONAL_DATA=false: personal fields are produced in clear; \
                 an erasure cannot reach the log"
            );
        }
        let api_keys = ApiKeys::new(config.api_keys.clone());
        if !api_keys.enabled() {
            tracing::warn!(
                "no api keys configured (WRITE_SIDE_API_KEYS_SHA256): authentication is off"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(config.ready_timeout())
            .build()?;
        let openapi = crate::openapi::document(
            &catalog,
            &crate::openapi::Options {
                auth: api_keys.enabled(),
                max_batch_items: config.max_batch_items,
            },
        );
        Ok(AppState {
            inner: Arc::new(Shared {
                config,
                catalog,
                codec,
                crypto,
                fingerprint_key,
                kafka,
                budget,
                idempotency,
                api_keys,
                metrics,
                request_metrics: RequestMetrics::default(),
                http,
                openapi,
            }),
        })
    }
}
