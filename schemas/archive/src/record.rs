//! One archived Kafka record, exactly as it was on the log, and the Avro schema of the
//! archive's object container files.

#[cfg(test)]
use apache_avro::types::Value;
use apache_avro::Schema;
use std::sync::OnceLock;

use crate::container::{write_bytes, write_long, ContainerError, Input};

/// A record as it was on the log: nothing decoded, nothing dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedRecord {
    /// The topic it was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record's timestamp in milliseconds since the epoch, when it has one.
    pub timestamp_ms: Option<i64>,
    /// The key's bytes, when it has a key.
    pub key: Option<Vec<u8>>,
    /// The value as produced (for factline's events: the Confluent wire format).
    pub value: Option<Vec<u8>>,
    /// Headers in their order on the record; a header may repeat and may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// The Avro schema of one archived record (`factline.archive.Record`).
pub const SCHEMA_JSON: &str = r#"{
  "type": "record",
  "name": "Record",
  "namespace": "factline.archive",
  "doc": "One Kafka record, unchanged.",
  "fields": [
    {"name": "topic", "type": "string"},
    {"name": "partition", "type": "int"},
    {"name": "offset", "type": "long"},
    {"name": "timestamp", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null},
    {"name": "key", "type": ["null", "bytes"], "default": null},
    {"name": "value", "type": ["null", "bytes"], "default": null},
    {"name": "headers", "type": {"type": "array", "items": {
      "type": "record", "name": "Header", "fields": [
        {"name": "key", "type": "string"},
        {"name": "value", "type": ["null", "bytes"], "default": null}
      ]}}}
  ]
}"#;

/// The parsed [`SCHEMA_JSON`].
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| match Schema::parse_str(SCHEMA_JSON) {
        Ok(schema) => schema,
        // the schema is a constant of this crate; its unit test parses it
        Err(e) => unreachable!("the archive's record schema does not parse: {e}"),
    })
}

#[cfg(test)]
fn optional_bytes(value: &Option<Vec<u8>>) -> Value {
    match value {
        Some(bytes) => Value::Union(1, Box::new(Value::Bytes(bytes.clone()))),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

#[cfg(test)]
impl ArchivedRecord {
    /// The record as an Avro value of [`schema`] (tests: checks against apache-avro).
    pub fn to_avro(&self) -> Value {
        let timestamp = match self.timestamp_ms {
            Some(ms) => Value::Union(1, Box::new(Value::TimestampMillis(ms))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        let headers = self
            .headers
            .iter()
            .map(|(key, value)| {
                Value::Record(vec![
                    ("key".into(), Value::String(key.clone())),
                    ("value".into(), optional_bytes(value)),
                ])
            })
            .collect();
        Value::Record(vec![
            ("topic".into(), Value::String(self.topic.clone())),
            ("partition".into(), Value::Int(self.partition)),
            ("offset".into(), Value::Long(self.offset)),
            ("timestamp".into(), timestamp),
            ("key".into(), optional_bytes(&self.key)),
            ("value".into(), optional_bytes(&self.value)),
            ("headers".into(), Value::Array(headers)),
        ])
    }

    /// The record from an Avro value of [`schema`]; `None` when the value has another shape.
    pub fn from_avro(value: Value) -> Option<ArchivedRecord> {
        let Value::Record(fields) = value else {
            return None;
        };
        let mut record = ArchivedRecord {
            topic: String::new(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: None,
            headers: Vec::new(),
        };
        for (name, field) in fields {
            match (name.as_str(), field) {
                ("topic", Value::String(s)) => record.topic = s,
                ("partition", Value::Int(p)) => record.partition = p,
                ("offset", Value::Long(o)) => record.offset = o,
                ("timestamp", Value::Union(_, inner)) => {
                    record.timestamp_ms = match *inner {
                        Value::TimestampMillis(ms) | Value::Long(ms) => Some(ms),
                        Value::Null => None,
                        _ => return None,
                    }
                }
                ("key", Value::Union(_, inner)) => record.key = bytes_of(*inner)?,
                ("value", Value::Union(_, inner)) => record.value = bytes_of(*inner)?,
                ("headers", Value::Array(items)) => {
                    for item in items {
                        let Value::Record(pair) = item else {
                            return None;
                        };
                        let mut key = None;
                        let mut value = None;
                        for (name, field) in pair {
                            match (name.as_str(), field) {
                                ("key", Value::String(s)) => key = Some(s),
                                ("value", Value::Union(_, inner)) => value = bytes_of(*inner)?,
                                _ => return None,
                            }
                        }
                        record.headers.push((key?, value));
                    }
                }
                _ => return None,
            }
        }
        Some(record)
    }
}

/// `Some(None)` for null, `Some(Some(bytes))` for bytes, `None` for anything else.
#[cfg(test)]
fn bytes_of(value: Value) -> Option<Option<Vec<u8>>> {
    match value {
        Value::Null => Some(None),
        Value::Bytes(bytes) => Some(Some(bytes)),
        _ => None,
    }
}

/// A Kafka record as the archive writes it, whoever holds it: an [`ArchivedRecord`], or a
/// consumer's own record type (the archiver writes the records it read without copying them
/// into [`ArchivedRecord`]s first).
pub trait LogRecord {
    /// The topic it was read from.
    fn topic(&self) -> &str;
    /// Its partition.
    fn partition(&self) -> i32;
    /// Its offset in the partition.
    fn offset(&self) -> i64;
    /// Its timestamp in milliseconds since the epoch, when it has one.
    fn timestamp_ms(&self) -> Option<i64>;
    /// The key's bytes, when it has a key.
    fn key(&self) -> Option<&[u8]>;
    /// The value's bytes, when it has a value.
    fn value(&self) -> Option<&[u8]>;
    /// The headers in their order.
    fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_;

    /// Appends the record in Avro's binary encoding of [`schema`] (what [`crate::container`]
    /// writes, without building a generic value first).
    fn write_avro(&self, out: &mut Vec<u8>) {
        write_bytes(out, self.topic().as_bytes());
        write_long(out, i64::from(self.partition()));
        write_long(out, self.offset());
        match self.timestamp_ms() {
            Some(ms) => {
                write_long(out, 1);
                write_long(out, ms);
            }
            None => write_long(out, 0),
        }
        write_optional_bytes(out, self.key());
        write_optional_bytes(out, self.value());
        let count = self.headers().count();
        if count > 0 {
            write_long(out, count as i64);
            for (key, value) in self.headers() {
                write_bytes(out, key.as_bytes());
                write_optional_bytes(out, value);
            }
        }
        write_long(out, 0);
    }

    /// Whether `other` is the same record, byte for byte.
    fn same_as(&self, other: &impl LogRecord) -> bool {
        self.topic() == other.topic()
            && self.partition() == other.partition()
            && self.offset() == other.offset()
            && self.timestamp_ms() == other.timestamp_ms()
            && self.key() == other.key()
            && self.value() == other.value()
            && self.headers().eq(other.headers())
    }
}

/// A borrowed record is written as the record it borrows.
impl<R: LogRecord> LogRecord for &R {
    fn topic(&self) -> &str {
        (**self).topic()
    }
    fn partition(&self) -> i32 {
        (**self).partition()
    }
    fn offset(&self) -> i64 {
        (**self).offset()
    }
    fn timestamp_ms(&self) -> Option<i64> {
        (**self).timestamp_ms()
    }
    fn key(&self) -> Option<&[u8]> {
        (**self).key()
    }
    fn value(&self) -> Option<&[u8]> {
        (**self).value()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        (**self).headers()
    }
}

impl LogRecord for ArchivedRecord {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        self.headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
    }
}

impl ArchivedRecord {
    /// Reads one record in Avro's binary encoding of [`schema`].
    pub(crate) fn read_avro(input: &mut Input<'_>) -> Result<ArchivedRecord, ContainerError> {
        let topic = input.string()?;
        let partition = input.int()?;
        let offset = input.long()?;
        let timestamp_ms = match input.branch(2)? {
            0 => None,
            _ => Some(input.long()?),
        };
        let key = read_optional_bytes(input)?;
        let value = read_optional_bytes(input)?;
        let mut headers = Vec::new();
        loop {
            let count = input.block_count()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                let key = input.string()?;
                headers.push((key, read_optional_bytes(input)?));
            }
        }
        Ok(ArchivedRecord {
            topic,
            partition,
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        })
    }
}

fn write_optional_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            write_long(out, 1);
            write_bytes(out, bytes);
        }
        None => write_long(out, 0),
    }
}

fn read_optional_bytes(input: &mut Input<'_>) -> Result<Option<Vec<u8>>, ContainerError> {
    Ok(match input.branch(2)? {
        0 => None,
        _ => Some(input.bytes()?.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parses_and_a_record_round_trips_through_it() {
        let record = ArchivedRecord {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_764_000_000_123),
            key: Some(b"o-1".to_vec()),
            value: Some(vec![0, 0, 0, 0, 7, 1, 2, 3]),
            headers: vec![
                ("event-id".into(), Some(b"e".to_vec())),
                ("empty".into(), None),
                ("event-id".into(), Some(Vec::new())),
            ],
        };
        let value = record.to_avro();
        assert!(value.validate(schema()));
        assert_eq!(
            ArchivedRecord::from_avro(value.clone()),
            Some(record.clone())
        );
        // the direct binary encoding is the generic one's
        let mut direct = Vec::new();
        record.write_avro(&mut direct);
        assert_eq!(
            direct,
            apache_avro::writer::datum::GenericDatumWriter::builder(schema())
                .build()
                .unwrap()
                .write_value_to_vec(value)
                .unwrap()
        );
        let mut input = Input::new(&direct);
        assert_eq!(ArchivedRecord::read_avro(&mut input).unwrap(), record);
        assert!(input.is_empty());
    }

    #[test]
    fn a_tombstone_without_timestamp_round_trips() {
        let record = ArchivedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: Some(b"k".to_vec()),
            value: None,
            headers: Vec::new(),
        };
        assert_eq!(ArchivedRecord::from_avro(record.to_avro()), Some(record));
    }
}
