//! The Kafka producer: an idempotent rdkafka `FutureProducer` (`acks=all`) whose answers are
//! classified as written, not written, or unknown (may have reached the broker), plus a watch on
//! broker reachability so requests are refused at once while every broker is down instead of
//! waiting for a timeout. A fatal idempotence error replaces the producer.

use crate::config::Config;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Where an acknowledged record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition it landed in.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// Why a record was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProduceError {
    /// The record certainly did not reach the log (refused before sending, or by the broker).
    #[error("not written: {reason}")]
    NotWritten {
        /// What happened.
        reason: String,
        /// Whether trying again later may work (broker down, queue full) or not (record too large).
        transient: bool,
        /// Whether the record is too large for the broker.
        too_large: bool,
    },
    /// The record may or may not have reached the log (timed out, connection lost in flight).
    #[error("outcome unknown: {reason}")]
    Unknown {
        /// What happened.
        reason: String,
    },
}

impl ProduceError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProduceError::NotWritten {
                transient: true, ..
            } => "not_written_transient",
            ProduceError::NotWritten { .. } => "not_written",
            ProduceError::Unknown { .. } => "unknown",
        }
    }
}

/// Broker reachability as seen by the producer.
#[derive(Debug, Default)]
pub struct Health {
    brokers_down: AtomicBool,
    fatal: AtomicBool,
}

impl Health {
    /// Whether every broker is currently unreachable.
    pub fn brokers_down(&self) -> bool {
        self.brokers_down.load(Ordering::Relaxed)
    }

    fn set_down(&self, down: bool) {
        let was = self.brokers_down.swap(down, Ordering::Relaxed);
        if was != down {
            metrics::gauge!("factline_write_side_brokers_down").set(if down { 1.0 } else { 0.0 });
            if down {
                tracing::warn!("all kafka brokers are down: refusing commands with 503");
            } else {
                tracing::info!("kafka brokers reachable again");
            }
        }
    }
}

/// The rdkafka context: logs through tracing and keeps [`Health`] current.
pub struct Context {
    health: Arc<Health>,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility, message, "librdkafka"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility, message, "librdkafka"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, message, "librdkafka")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, message, "librdkafka"),
        }
    }

    /// Every half second: brokers are up when any connection is up, and down when none is
    /// while at least one was tried (librdkafka's own "all brokers down" never fires while a
    /// broker it has not needed yet sits in INIT, which is the usual case).
    fn stats(&self, statistics: Statistics) {
        let brokers = &statistics.brokers;
        if brokers.values().any(|b| b.state == "UP") {
            self.health.set_down(false);
        } else if brokers.values().any(|b| b.state != "INIT") {
            self.health.set_down(true);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.health.set_down(true),
            Some(RDKafkaErrorCode::Fatal) => {
                tracing::error!(error = %error, reason, "fatal kafka producer error");
                self.health.fatal.store(true, Ordering::Relaxed);
            }
            _ => tracing::warn!(error = %error, reason, "kafka client error"),
        }
    }
}

type Inner = FutureProducer<Context>;

/// The producer shared by every request (cheap to clone).
#[derive(Clone)]
pub struct Kafka {
    producer: Arc<RwLock<Inner>>,
    client_config: ClientConfig,
    health: Arc<Health>,
    delivery_wait: Duration,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka").finish_non_exhaustive()
    }
}

/// The librdkafka settings of the write side's producer.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka_brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", &config.compression)
        .set("linger.ms", config.linger_ms.to_string())
        .set("message.timeout.ms", config.message_timeout_ms.to_string())
        // The in-flight budget is the real limit; the queue is a little larger so it never
        // refuses a record the budget admitted.
        .set(
            "queue.buffering.max.messages",
            (config.max_in_flight_records + 1000).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (config.max_in_flight_bytes / 1024 + 1024).to_string(),
        )
        .set("statistics.interval.ms", "500")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "4");
    for (name, value) in &config.kafka_properties {
        client.set(name, value);
    }
    client
}

fn classify_enqueue(error: &KafkaError) -> ProduceError {
    let code = error.rdkafka_error_code();
    let too_large = matches!(
        code,
        Some(RDKafkaErrorCode::MessageSizeTooLarge) | Some(RDKafkaErrorCode::InvalidMessageSize)
    );
    ProduceError::NotWritten {
        reason: error.to_string(),
        transient: matches!(code, Some(RDKafkaErrorCode::QueueFull)),
        too_large,
    }
}

fn classify_delivery(error: &KafkaError) -> ProduceError {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            ProduceError::NotWritten {
                reason: error.to_string(),
                transient: false,
                too_large: true,
            }
        }
        Some(
            C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidRecord
            | C::PurgeQueue,
        ) => ProduceError::NotWritten {
            reason: error.to_string(),
            transient: true,
            too_large: false,
        },
        _ => ProduceError::Unknown {
            reason: error.to_string(),
        },
    }
}

impl Kafka {
    /// Creates the producer (no network traffic yet) and the task that watches the brokers
    /// while they are down.
    pub fn new(config: &Config) -> Result<Kafka, KafkaError> {
        let client_config = client_config(config);
        let health = Arc::new(Health::default());
        let producer = client_config.create_with_context(Context {
            health: health.clone(),
        })?;
        let kafka = Kafka {
            producer: Arc::new(RwLock::new(producer)),
            client_config,
            health,
            delivery_wait: config.message_timeout() + Duration::from_secs(5),
        };
        kafka.spawn_watch();
        Ok(kafka)
    }

    /// Broker reachability.
    pub fn health(&self) -> &Health {
        &self.health
    }

    fn current(&self) -> Inner {
        self.producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// While every broker is down, asks for metadata every half second (a producer with nothing
    /// to send would not reconnect by itself), and replaces the producer after a fatal error.
    fn spawn_watch(&self) {
        let weak = Arc::downgrade(&self.producer);
        let health = self.health.clone();
        let client_config = self.client_config.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                if health.fatal.swap(false, Ordering::Relaxed) {
                    match client_config.create_with_context::<_, Inner>(Context {
                        health: health.clone(),
                    }) {
                        Ok(fresh) => {
                            *shared.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                            tracing::warn!("kafka producer replaced after a fatal error");
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot recreate the kafka producer");
                            health.fatal.store(true, Ordering::Relaxed);
                        }
                    }
                }
                if !health.brokers_down() {
                    continue;
                }
                let producer = shared.read().unwrap_or_else(|e| e.into_inner()).clone();
                drop(shared);
                let probe = tokio::task::spawn_blocking(move || {
                    producer
                        .client()
                        .fetch_metadata(None, Duration::from_millis(1000))
                        .map(|m| !m.brokers().is_empty())
                })
                .await;
                if matches!(probe, Ok(Ok(true))) {
                    health.set_down(false);
                }
            }
        });
    }

    /// Produces one record and waits for the broker's acknowledgement (bounded by
    /// `message.timeout.ms` plus a margin).
    pub async fn produce(
        &self,
        topic: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&'static str, String)],
    ) -> Result<Delivered, ProduceError> {
        if self.health.brokers_down() {
            return Err(ProduceError::NotWritten {
                reason: "kafka brokers unreachable".into(),
                transient: true,
                too_large: false,
            });
        }
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(owned);
        let producer = self.current();
        let delivery = producer
            .send_result(record)
            .map_err(|(error, _)| classify_enqueue(&error))?;
        match tokio::time::timeout(self.delivery_wait, delivery).await {
            Ok(Ok(Ok(d))) => {
                self.health.set_down(false);
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Ok(Err((error, _)))) => Err(classify_delivery(&error)),
            Ok(Err(_canceled)) => Err(ProduceError::Unknown {
                reason: "the producer was closed before the broker answered".into(),
            }),
            Err(_elapsed) => Err(ProduceError::Unknown {
                reason: "no acknowledgement in time".into(),
            }),
        }
    }

    /// Fetches cluster metadata (readiness check).
    pub async fn check(&self, timeout: Duration) -> Result<usize, String> {
        let producer = self.current();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits (at most `timeout`) until every queued record is acknowledged or failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), String> {
        let producer = self.current();
        tokio::task::spawn_blocking(move || producer.flush(timeout).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_config_and_properties_win() {
        let config = Config {
            kafka_properties: vec![("linger.ms".into(), "50".into())],
            ..Config::default()
        };
        let client = client_config(&config);
        assert_eq!(client.get("acks"), Some("all"));
        assert_eq!(client.get("enable.idempotence"), Some("true"));
        assert_eq!(client.get("compression.type"), Some("lz4"));
        assert_eq!(client.get("message.timeout.ms"), Some("10000"));
        assert_eq!(client.get("linger.ms"), Some("50"));
    }

    #[test]
    fn every_kafka_compression_codec_is_built_in() {
        // librdkafka refuses a codec it was built without when the producer is created
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let config = Config {
                compression: codec.into(),
                ..Config::default()
            };
            let created: Result<FutureProducer, _> = client_config(&config).create();
            assert!(created.is_ok(), "{codec}: {:?}", created.err());
        }
    }

    #[test]
    fn timeouts_are_unknown_and_refusals_are_not_written() {
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(matches!(
            classify_delivery(&timeout),
            ProduceError::Unknown { .. }
        ));
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(matches!(
            classify_delivery(&too_large),
            ProduceError::NotWritten {
                too_large: true,
                ..
            }
        ));
        let full = KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull);
        assert!(matches!(
            classify_enqueue(&full),
            ProduceError::NotWritten {
                transient: true,
                ..
            }
        ));
    }
}
