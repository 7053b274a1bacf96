//! Start-up, before the consume loop: the HTTP server (health and metrics), the PostgreSQL
//! pool, the sink's bootstrap (retried while the store is not ready), and the Kafka client
//! configurations of the consumer and the dead-letter producer.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rdkafka::ClientConfig;
use tokio::sync::watch;

use super::sink::Sink;
use super::wait::{sleep_or_stop, stopped};
use crate::backoff::Backoff;
use crate::bookkeeping::{BootstrapError, Liveness, Registration};
use crate::config::Config;
use crate::error::{chain, RunError};
use crate::http::{self, SharedHealth};
use crate::telemetry::Metrics;

/// Serves `/healthz` and `/metrics` on `PROJECTOR_ADDR` (if set) until `stop`.
pub async fn serve_http(
    config: &Config,
    health: &SharedHealth,
    stop: &watch::Receiver<bool>,
) -> Result<(), RunError> {
    let Some(addr) = config.http_addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Http { addr, source })?;
    let router = http::router(health.clone());
    let mut http_stop = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                stopped(&mut http_stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "http server failed");
        }
    });
    tracing::info!(%addr, "http listening");
    Ok(())
}

/// The PostgreSQL connection settings and the pool (bounded waits; connections are made
/// lazily, so an unreachable database shows up as retries, not as a start-up failure).
pub fn pool(config: &Config) -> Result<(tokio_postgres::Config, Pool), RunError> {
    let pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| RunError::Pool(Box::new(e)))?;
    let manager = Manager::from_config(
        pg.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.database_pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| RunError::Pool(Box::new(e)))?;
    Ok((pg, pool))
}

/// Bootstraps the sink, retrying transient failures with backoff; `None` if stopped first.
pub async fn bootstrap<K: Sink>(
    sink: &K,
    pool: &Pool,
    registration: &Registration,
    metrics: &Metrics,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Liveness>, RunError> {
    loop {
        let attempt = async {
            let mut client = pool
                .get()
                .await
                .map_err(|e| BootstrapError::Transient(Box::new(e)))?;
            sink.bootstrap(&mut client, registration).await
        };
        match attempt.await {
            Ok(liveness) => return Ok(Some(liveness)),
            Err(BootstrapError::Migration { migration, source }) => {
                return Err(RunError::Migration {
                    projector: registration.projector.clone(),
                    migration,
                    source,
                })
            }
            Err(error @ BootstrapError::Transient(_)) => {
                metrics.retry("bootstrap");
                tracing::warn!(error = %chain(&error), "sink not ready, retrying");
                if sleep_or_stop(stop, backoff.next_delay()).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// The consumer's Kafka configuration (brokers and every `KAFKA_PROPERTY_*`) and the
/// dead-letter producer's (the same, without consumer-only properties).
pub fn kafka_configs(config: &Config) -> (ClientConfig, ClientConfig) {
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &config.kafka_brokers);
    for (key, value) in &config.kafka_properties {
        kafka.set(key, value);
    }
    // The informational commit: librdkafka commits the offsets the loop stores after each
    // batch every `auto.commit.interval.ms` (5 s) and when partitions are revoked, instead of
    // a commit per batch. A broker writes every commit (noida-db then saves its whole state:
    // with a million records in it, a commit per batch kept it busy a full core).
    kafka.set(
        "enable.auto.commit",
        if config.commit_to_kafka {
            "true"
        } else {
            "false"
        },
    );
    let mut producer = ClientConfig::new();
    for (key, value) in kafka.config_map() {
        if !CONSUMER_ONLY.contains(&key) {
            producer.set(key, value);
        }
    }
    (kafka, producer)
}

/// librdkafka consumer properties not passed to the dead-letter producer (it would warn).
const CONSUMER_ONLY: &[&str] = &[
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "group.protocol",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.queue.backoff.ms",
];
