//! The dead-letter topic: a record that cannot be decoded or that a projection rejects is copied
//! to `<topic>.dlq` with its key, value and headers, plus headers saying why and from where,
//! and recorded as a row of `factline_projector_dead_letters` for the read API.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::record::Record;

/// Header: why the record was dead-lettered.
pub const HEADER_ERROR: &str = "error";
/// Header: the projector that dead-lettered it.
pub const HEADER_PROJECTOR: &str = "projector";
/// Header: the topic it was read from.
pub const HEADER_ORIGIN_TOPIC: &str = "origin_topic";
/// Header: the partition it was read from.
pub const HEADER_ORIGIN_PARTITION: &str = "origin_partition";
/// Header: its offset there.
pub const HEADER_ORIGIN_OFFSET: &str = "origin_offset";

/// The dead-letter topic of a topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// A record on its way to the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The original record.
    pub record: Record,
    /// Why it is dead-lettered.
    pub error: String,
}

/// A dead-letter write failed (the broker is unreachable): the batch is retried.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter write to {topic} failed")]
pub struct DeadLetterError {
    /// The dead-letter topic.
    pub topic: String,
    /// The producer's error.
    #[source]
    pub source: rdkafka::error::KafkaError,
}

/// Writes dead letters (idempotent producer, `acks=all`).
///
/// The producer is created at the first dead letter, not at start: most projectors never
/// write one, and an idle librdkafka producer still costs a client instance, its broker
/// connection and threads (its polling thread alone took about a third of an idle
/// projector's CPU).
#[derive(Clone)]
pub struct DeadLetterWriter {
    config: ClientConfig,
    producer: Arc<Mutex<Option<FutureProducer>>>,
    projector: String,
}

impl DeadLetterWriter {
    /// Checks the producer's configuration (the shared Kafka client configuration); the
    /// producer itself is created at the first dead letter.
    pub fn new(
        mut client: ClientConfig,
        projector: &str,
    ) -> Result<DeadLetterWriter, rdkafka::error::KafkaError> {
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000");
        // every property is checked now, so a wrong one stops the projector at start
        client.create_native_config()?;
        Ok(DeadLetterWriter {
            config: client,
            producer: Arc::default(),
            projector: projector.to_owned(),
        })
    }

    /// The producer, created on first use.
    fn producer(&self) -> Result<FutureProducer, rdkafka::error::KafkaError> {
        let mut slot = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(producer) = &*slot {
            return Ok(producer.clone());
        }
        let producer: FutureProducer = self.config.create()?;
        *slot = Some(producer.clone());
        Ok(producer)
    }

    /// Writes one dead letter and waits for the broker's acknowledgement.
    pub async fn write(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let record = &letter.record;
        let topic = dlq_topic(&record.origin.topic);
        let producer = self.producer().map_err(|source| DeadLetterError {
            topic: topic.clone(),
            source,
        })?;
        let partition = record.origin.partition.to_string();
        let offset = record.origin.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 5);
        for (key, value) in record.headers.iter() {
            headers = headers.insert(Header { key, value });
        }
        for (key, value) in [
            (HEADER_ERROR, letter.error.as_str()),
            (HEADER_PROJECTOR, self.projector.as_str()),
            (HEADER_ORIGIN_TOPIC, &*record.origin.topic),
            (HEADER_ORIGIN_PARTITION, partition.as_str()),
            (HEADER_ORIGIN_OFFSET, offset.as_str()),
        ] {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(headers);
        if let Some(key) = record.key.as_deref() {
            out = out.key(key);
        }
        if let Some(payload) = record.payload.as_deref() {
            out = out.payload(payload);
        }
        producer
            .send(out, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(source, _)| DeadLetterError { topic, source })
    }
}

/// Records dead letters in `factline_projector_dead_letters` (in the caller's transaction; a
/// record dead-lettered again keeps one row with the latest error).
pub async fn record_rows<C: tokio_postgres::GenericClient>(
    client: &C,
    projector: &str,
    version: u32,
    letters: &[DeadLetter],
) -> Result<(), tokio_postgres::Error> {
    for letter in letters {
        let origin = &letter.record.origin;
        client
            .execute(
                "INSERT INTO factline_projector_dead_letters \
                 (projector, version, topic, partition, \"offset\", error) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (projector, version, topic, partition, \"offset\") \
                 DO UPDATE SET error = EXCLUDED.error, dead_lettered_at = now()",
                &[
                    &projector,
                    &(version as i32),
                    &&*origin.topic,
                    &origin.partition,
                    &origin.offset,
                    &letter.error,
                ],
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::producer::Producer;

    fn config() -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", "127.0.0.1:9");
        config
    }

    #[test]
    fn a_wrong_producer_property_stops_the_projector_at_start() {
        let mut wrong = config();
        wrong.set("linger.ms", "soon");
        let error = DeadLetterWriter::new(wrong, "p").err().expect("refused");
        assert!(error.to_string().contains("linger.ms"), "{error}");
    }

    #[test]
    fn no_producer_runs_before_the_first_dead_letter() {
        let writer = DeadLetterWriter::new(config(), "p").unwrap();
        assert!(writer.producer.lock().unwrap().is_none());
        let first = writer.producer().unwrap();
        let again = writer.producer().unwrap();
        assert!(
            std::ptr::eq(first.client(), again.client()),
            "one producer, made once"
        );
    }
}
