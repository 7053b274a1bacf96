//! An owned copy of a consumed Kafka record, kept in a batch until it is committed.

use rdkafka::message::{BorrowedMessage, Headers, Message};

use crate::projection::Origin;

/// A consumed record: origin, key, value bytes and headers, exactly as read.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic, partition and offset.
    pub origin: Origin,
    /// The key bytes.
    pub key: Option<Vec<u8>>,
    /// The value bytes.
    pub payload: Option<Vec<u8>>,
    /// The headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The broker or producer timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// Copies a message out of the consumer's buffer.
    pub fn from_message(message: &BorrowedMessage<'_>) -> Record {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Record {
            origin: Origin {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        }
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned)
    }
}
