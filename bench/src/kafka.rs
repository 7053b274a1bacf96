//! Kafka side of the bench: topics under a fresh prefix, the encoded backlog (Avro in the
//! Confluent wire format with the envelope headers, exactly what the write side produces), the
//! raw producer limit (idempotent, `acks=all`, the write side's batching settings) and the raw
//! consumer limit (reading the same backlog from the beginning).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use factline_keystore::FieldCrypto;
use factline_schemas::topics::{create_topics, with_dead_letter_topics};
use factline_schemas::{json_to_avro, Catalog, Envelope, EventCodec};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientConfig, ClientContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

use crate::data::SampleEvent;

/// A Kafka failure of the bench.
#[derive(Debug, thiserror::Error)]
pub enum KafkaBenchError {
    /// The client failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Topic creation failed.
    #[error("topics: {0}")]
    Topics(#[from] factline_schemas::topics::TopicsError),
    /// An event could not be encoded.
    #[error("encode {event_type}: {message}")]
    Encode {
        /// The event type.
        event_type: String,
        /// Why.
        message: String,
    },
    /// Records were not acknowledged.
    #[error("{0} records were not acknowledged")]
    NotDelivered(u64),
    /// The consumer did not read the whole backlog in time.
    #[error("consumer read {read} of {expected} records before timing out")]
    Incomplete {
        /// Read.
        read: u64,
        /// Expected.
        expected: u64,
    },
    /// A blocking task panicked.
    #[error("task failed: {0}")]
    Task(String),
}

/// A client configuration for the brokers (plus `KAFKA_PROPERTY_*` from the environment).
pub fn client_config(brokers: &str) -> ClientConfig {
    factline_schemas::topics::client_config(brokers)
}

/// Creates the catalog's topics (and `.dlq`) under `prefix`.
pub async fn create_prefixed_topics(
    brokers: &str,
    prefix: &str,
    partitions: i32,
) -> Result<Vec<String>, KafkaBenchError> {
    let topics: Vec<String> = Catalog::builtin()
        .topics()
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    let names = with_dead_letter_topics(&topics);
    create_topics(&client_config(brokers), &names, partitions, 1).await?;
    Ok(names)
}

/// Deletes topics (best effort: the bench cleans up after itself).
pub async fn delete_topics(brokers: &str, topics: &[String]) {
    let Ok(admin) = client_config(brokers).create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    if let Err(error) = admin.delete_topics(&names, &AdminOptions::new()).await {
        tracing::warn!(%error, "cannot delete bench topics");
    }
}

/// Deletes every record of `topics` (`DeleteRecords` up to each partition's end, as retention
/// would), keeping the topics and their offsets; returns how many records went. Blocking.
pub fn delete_records_to_end(brokers: &str, topics: &[String]) -> Result<i64, KafkaBenchError> {
    let mut ends = TopicPartitionList::new();
    let mut deleted = 0;
    for topic in topics {
        for (partition, (low, high)) in watermarks(brokers, topic)? {
            if high > low {
                ends.add_partition_offset(topic, partition, Offset::Offset(high))?;
                deleted += high - low;
            }
        }
    }
    if ends.count() == 0 {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let done = futures::executor::block_on(admin.delete_records(&ends, &options))?;
    for element in done.elements() {
        element.error()?;
    }
    Ok(deleted)
}

/// One record ready to produce.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    /// Real (prefixed) topic.
    pub topic: String,
    /// Key.
    pub key: String,
    /// Confluent wire-format Avro.
    pub payload: Vec<u8>,
    /// Envelope headers.
    pub headers: Vec<(&'static str, String)>,
}

impl EncodedRecord {
    /// Key + payload + header bytes.
    pub fn size(&self) -> usize {
        self.key.len()
            + self.payload.len()
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// Encodes events for topics under `prefix` through the registry, with envelope headers; with
/// `crypto`, their personal fields encrypted first, as the write side does by default.
pub async fn encode(
    codec: &EventCodec,
    prefix: &str,
    events: &[SampleEvent],
    crypto: Option<&FieldCrypto>,
) -> Result<Vec<EncodedRecord>, KafkaBenchError> {
    let catalog = Catalog::builtin();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let entry = catalog
            .event(event.event_type)
            .ok_or_else(|| KafkaBenchError::Encode {
                event_type: event.event_type.into(),
                message: "not in the catalog".into(),
            })?;
        let mut value = json_to_avro(&entry.schema, event.body.clone()).map_err(|p| {
            KafkaBenchError::Encode {
                event_type: event.event_type.into(),
                message: serde_json::to_string(&p).unwrap_or_default(),
            }
        })?;
        if let Some(crypto) = crypto {
            crypto
                .seal(entry, &mut value)
                .await
                .map_err(|e| KafkaBenchError::Encode {
                    event_type: event.event_type.into(),
                    message: e.to_string(),
                })?;
        }
        let topic = format!("{prefix}{}", event.topic);
        let payload = codec
            .encode_value(&topic, event.event_type, &value)
            .await
            .map_err(|e| KafkaBenchError::Encode {
                event_type: event.event_type.into(),
                message: e.to_string(),
            })?;
        let envelope = Envelope {
            event_id: event.event_id,
            event_type: event.event_type.to_owned(),
            command_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, event.event_id.as_bytes()),
            correlation_id: format!("bench-{}", event.key),
            causation_id: None,
            occurred_at: event.occurred_at,
            traceparent: None,
        };
        out.push(EncodedRecord {
            topic,
            key: event.key.clone(),
            payload,
            headers: envelope.to_headers(),
        });
    }
    Ok(out)
}

struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct CountingContext(Arc<Counting>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What a raw produce achieved.
#[derive(Debug, Clone)]
pub struct Produced {
    /// Records acknowledged.
    pub records: u64,
    /// Bytes (key + value + headers).
    pub bytes: u64,
    /// From the first send to the last acknowledgement.
    pub elapsed: Duration,
    /// The end offset (high watermark) of every partition written, after the produce.
    pub ends: HashMap<(String, i32), i64>,
}

/// Produces `records` as fast as librdkafka allows with the write side's producer settings
/// (`acks=all`, idempotent, `linger.ms=5`, lz4) and waits for every acknowledgement.
pub fn produce_raw(brokers: &str, records: &[EncodedRecord]) -> Result<Produced, KafkaBenchError> {
    let counting = Arc::new(Counting {
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let producer: ThreadedProducer<CountingContext> = client_config(brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "60000")
        .create_with_context(CountingContext(counting.clone()))?;
    // Connections, metadata and the idempotent producer id are set up before the clock starts.
    let mut topics: Vec<&String> = records.iter().map(|r| &r.topic).collect();
    topics.sort();
    topics.dedup();
    for topic in &topics {
        producer
            .client()
            .fetch_metadata(Some(topic.as_str()), Duration::from_secs(10))?;
    }
    let started = Instant::now();
    let mut bytes = 0u64;
    for record in records {
        bytes += record.size() as u64;
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (k, v) in &record.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut base = BaseRecord::to(&record.topic)
            .key(record.key.as_bytes())
            .payload(&record.payload)
            .headers(headers);
        loop {
            match producer.send(base) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let elapsed = started.elapsed();
    let failed = counting.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(KafkaBenchError::NotDelivered(failed));
    }
    let mut ends = HashMap::new();
    for topic in topics {
        ends.extend(
            watermarks(brokers, topic)?
                .into_iter()
                .map(|(p, (_, h))| ((topic.clone(), p), h)),
        );
    }
    Ok(Produced {
        records: counting.delivered.load(Ordering::Relaxed),
        bytes,
        elapsed,
        ends,
    })
}

/// `(low, high)` watermarks of every partition of `topic`.
pub fn watermarks(brokers: &str, topic: &str) -> Result<HashMap<i32, (i64, i64)>, KafkaBenchError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", format!("bench-meta-{}", Uuid::new_v4()))
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut out = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            out.insert(
                p.id(),
                consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?,
            );
        }
    }
    Ok(out)
}

/// What a raw consume achieved.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Records read.
    pub records: u64,
    /// Payload + key bytes read.
    pub bytes: u64,
    /// From assignment to the last record.
    pub elapsed: Duration,
}

/// Reads every record of `topic` from the beginning with a plain consumer (no group commits),
/// as fast as librdkafka delivers them.
pub fn consume_raw(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Consumed, KafkaBenchError> {
    let marks = watermarks(brokers, topic)?;
    let expected: i64 = marks.values().map(|(low, high)| high - low).sum();
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", format!("bench-raw-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in marks.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < expected as u64 {
        if started.elapsed() > timeout {
            return Err(KafkaBenchError::Incomplete {
                read: records,
                expected: expected as u64,
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += (message.payload_len() + message.key().map_or(0, <[u8]>::len)) as u64;
            }
            Some(Err(error)) => tracing::warn!(%error, "raw consumer error"),
            None => {}
        }
    }
    Ok(Consumed {
        records,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Runs a blocking Kafka job off the async runtime.
pub async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, KafkaBenchError> + Send + 'static,
) -> Result<T, KafkaBenchError> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| KafkaBenchError::Task(e.to_string()))?
}
