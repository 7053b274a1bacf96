//! The log side of dead letters: reading a dead-lettered record back from its topic (exact key,
//! value, headers and timestamp) and producing its redriven copy to the same partition.

use std::collections::BTreeMap;
use std::time::Duration;

use factline_schemas::redrive::HEADER_REDRIVEN_FROM;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::dlq::store::RecordId;
use crate::error::CliError;

/// How long one read or write may take.
const WAIT: Duration = Duration::from_secs(30);

/// A record as stored in the log.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it is.
    pub id: RecordId,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Its timestamp (ms since the epoch).
    pub timestamp_ms: Option<i64>,
}

impl Stored {
    /// The first header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// A Kafka connection for reading records back and producing copies.
pub struct Log {
    brokers: String,
    properties: BTreeMap<String, String>,
    producer: Option<FutureProducer>,
}

impl Log {
    /// A connection to `brokers` with the `KAFKA_PROPERTY_*` properties.
    pub fn new(brokers: &str, properties: &BTreeMap<String, String>) -> Log {
        Log {
            brokers: brokers.to_owned(),
            properties: properties.clone(),
            producer: None,
        }
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Reads the record at `id` from its topic.
    pub async fn fetch(&self, id: &RecordId) -> Result<Stored, CliError> {
        let mut config = self.config();
        config
            .set("group.id", "factline-cli")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "error");
        let consumer: StreamConsumer = config.create().map_err(|e| CliError::kafka("", e))?;
        let (low, high) = consumer
            .fetch_watermarks(&id.topic, id.partition, WAIT)
            .map_err(|e| CliError::kafka(&format!("watermarks of {}", id.topic), e))?;
        if id.offset < low {
            return Err(CliError::NotFound(format!(
                "record {id} in the log (the partition now starts at offset {low})"
            )));
        }
        if id.offset >= high {
            return Err(CliError::NotFound(format!(
                "record {id} in the log (the partition ends at offset {high})"
            )));
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&id.topic, id.partition, Offset::Offset(id.offset))
            .map_err(|e| CliError::kafka("assign", e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| CliError::kafka("assign", e))?;
        let message = tokio::time::timeout(WAIT, consumer.recv())
            .await
            .map_err(|_| CliError::Timeout(format!("reading record {id} from kafka")))?
            .map_err(|e| CliError::kafka(&format!("reading record {id}"), e))?;
        if message.offset() != id.offset {
            return Err(CliError::NotFound(format!(
                "record {id} in the log (the next record there is at offset {})",
                message.offset()
            )));
        }
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Stored {
            id: id.clone(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        })
    }

    /// Produces `record` again to its own topic and partition, with its key, value, headers
    /// and timestamp, plus the header [`HEADER_REDRIVEN_FROM`]; waits for the broker's
    /// acknowledgement and returns the copy's (partition, offset).
    pub async fn redrive(&mut self, record: &Stored) -> Result<(i32, i64), CliError> {
        if self.producer.is_none() {
            let mut config = self.config();
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("message.timeout.ms", "30000");
            self.producer = Some(config.create().map_err(|e| CliError::kafka("", e))?);
        }
        let Some(producer) = &self.producer else {
            return Err(CliError::kafka("", "no producer"));
        };
        let origin = record.id.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 1);
        for (key, value) in &record.headers {
            if key != HEADER_REDRIVEN_FROM {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
        }
        headers = headers.insert(Header {
            key: HEADER_REDRIVEN_FROM,
            value: Some(origin.as_str()),
        });
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&record.id.topic)
            .partition(record.id.partition)
            .headers(headers);
        if let Some(key) = record.key.as_deref() {
            out = out.key(key);
        }
        if let Some(payload) = record.payload.as_deref() {
            out = out.payload(payload);
        }
        if let Some(timestamp) = record.timestamp_ms {
            out = out.timestamp(timestamp);
        }
        let delivery = producer
            .send(out, WAIT)
            .await
            .map_err(|(e, _)| CliError::kafka(&format!("producing the copy of {origin}"), e))?;
        Ok((delivery.partition, delivery.offset))
    }
}
