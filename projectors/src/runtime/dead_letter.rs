//! The dead-letter topic: a record that cannot be decoded or that a projection rejects is copied
//! to `<topic>.dlq` with its key, value and headers, plus headers saying why and from where,
//! and recorded as a row of `factline_projector_dead_letters` for the read API.

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
#[derive(Clone)]
pub struct DeadLetterWriter {
    producer: FutureProducer,
    projector: String,
}

impl DeadLetterWriter {
    /// Builds the producer from the shared Kafka client configuration.
    pub fn new(
        mut client: ClientConfig,
        projector: &str,
    ) -> Result<DeadLetterWriter, rdkafka::error::KafkaError> {
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000");
        Ok(DeadLetterWriter {
            producer: client.create()?,
            projector: projector.to_owned(),
        })
    }

    /// Writes one dead letter and waits for the broker's acknowledgement.
    pub async fn write(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let record = &letter.record;
        let topic = dlq_topic(&record.origin.topic);
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
        self.producer
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
