//! One archive object: consecutive records of one topic partition, in offset order, as an Avro
//! object container file (zstandard) whose metadata names the topic, the partition and the
//! offsets it covers.
//!
//! An object covers the offsets `first_offset..=last_offset`: every record of the partition in
//! that range is in it. Its first record may come after `first_offset` (offsets without a
//! record: transaction markers, compacted records), its last record is at `last_offset`. The
//! next object of the partition starts at `last_offset + 1`, so a chain of objects with no
//! gap between them covers the partition without a hole.
//!
//! Encoding is deterministic: the container's sync marker is derived from the topic, the
//! partition and the first offset, so the same records always give the same bytes, and a
//! retried write is byte-identical to the first.

use sha2::{Digest, Sha256};

use crate::container;
use crate::error::ArchiveError;
use crate::record::{ArchivedRecord, LogRecord, SCHEMA_JSON};

const META_TOPIC: &str = "factline.topic";
const META_PARTITION: &str = "factline.partition";
const META_FIRST: &str = "factline.first_offset";
const META_LAST: &str = "factline.last_offset";

/// What the manifest records about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The topic of every record.
    pub topic: String,
    /// The partition of every record.
    pub partition: i32,
    /// The first offset covered (the previous object's last offset + 1).
    pub first_offset: i64,
    /// The offset of the last record.
    pub last_offset: i64,
    /// The smallest and largest record timestamps (milliseconds), when records have them.
    pub first_time_ms: Option<i64>,
    /// See `first_time_ms`.
    pub last_time_ms: Option<i64>,
    /// How many records it holds.
    pub records: i64,
    /// Its size in bytes.
    pub bytes: i64,
    /// SHA-256 of the object's bytes, hex.
    pub sha256: String,
}

/// An encoded object and what it holds.
#[derive(Debug, Clone)]
pub struct ArchiveObject {
    /// What it holds.
    pub meta: ObjectMeta,
    /// The object container file.
    pub bytes: Vec<u8>,
}

fn format_error(topic: &str, partition: i32, first: i64, reason: impl ToString) -> ArchiveError {
    ArchiveError::Format {
        key: format!("{topic}/{partition}/{first}"),
        reason: reason.to_string(),
    }
}

/// An object whose records are encoded, not yet compressed ([`ArchiveObject::unsealed`]):
/// owns everything it needs, so [`UnsealedObject::seal`], most of the work, can run on
/// another thread than the one holding the records.
pub struct UnsealedObject {
    /// What it holds; `bytes` and `sha256` are set by [`UnsealedObject::seal`].
    meta: ObjectMeta,
    container: container::Unsealed,
}

impl UnsealedObject {
    /// The first offset the object covers.
    pub fn first_offset(&self) -> i64 {
        self.meta.first_offset
    }

    /// The offset of its last record.
    pub fn last_offset(&self) -> i64 {
        self.meta.last_offset
    }

    /// The object: its records compressed into the container's bytes, their size and
    /// checksum in its metadata.
    pub fn seal(self) -> Result<ArchiveObject, ArchiveError> {
        let mut meta = self.meta;
        let bytes = self
            .container
            .seal()
            .map_err(|e| format_error(&meta.topic, meta.partition, meta.first_offset, e))?;
        meta.bytes = bytes.len() as i64;
        meta.sha256 = hex::encode(Sha256::digest(&bytes));
        Ok(ArchiveObject { meta, bytes })
    }
}

impl ArchiveObject {
    /// Encodes `records` as the object covering `first_offset` to the last record: at least one
    /// record, all of one topic partition, offsets strictly increasing from `first_offset` on
    /// (gaps are allowed: compaction and transaction markers leave them).
    pub fn encode<R: LogRecord>(
        first_offset: i64,
        records: &[R],
    ) -> Result<ArchiveObject, ArchiveError> {
        Self::unsealed(first_offset, records)?.seal()
    }

    /// [`ArchiveObject::encode`] up to the compression, which [`UnsealedObject::seal`] does.
    pub fn unsealed<R: LogRecord>(
        first_offset: i64,
        records: &[R],
    ) -> Result<UnsealedObject, ArchiveError> {
        let (first, last) = match (records.first(), records.last()) {
            (Some(first), Some(last)) => (first, last),
            _ => {
                return Err(ArchiveError::Input(
                    "an object needs at least one record".into(),
                ))
            }
        };
        if first.offset() < first_offset {
            return Err(ArchiveError::Input(format!(
                "the object starts at offset {first_offset}, its first record is at {}",
                first.offset()
            )));
        }
        for pair in records.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.topic() != a.topic() || b.partition() != a.partition() || b.offset() <= a.offset()
            {
                return Err(ArchiveError::Input(format!(
                    "records must be of one partition in increasing offsets: {}/{}@{} then {}/{}@{}",
                    a.topic(),
                    a.partition(),
                    a.offset(),
                    b.topic(),
                    b.partition(),
                    b.offset()
                )));
            }
        }
        let (topic, partition) = (first.topic(), first.partition());
        let marker = sync_marker(topic, partition, first_offset);
        // metadata in a fixed order, so the same records always give the same bytes
        let container = container::Unsealed::new(
            &marker,
            &[
                ("avro.schema", schema_text().as_bytes()),
                (META_FIRST, first_offset.to_string().as_bytes()),
                (META_LAST, last.offset().to_string().as_bytes()),
                (META_PARTITION, partition.to_string().as_bytes()),
                (META_TOPIC, topic.as_bytes()),
            ],
            records,
        );
        let times = records.iter().filter_map(LogRecord::timestamp_ms);
        let meta = ObjectMeta {
            topic: topic.to_owned(),
            partition,
            first_offset,
            last_offset: last.offset(),
            first_time_ms: times.clone().min(),
            last_time_ms: times.max(),
            records: records.len() as i64,
            bytes: 0,
            sha256: String::new(),
        };
        Ok(UnsealedObject { meta, container })
    }

    /// Decodes an object's bytes, checking that its records are the ones its metadata names.
    pub fn decode(bytes: &[u8]) -> Result<(ObjectMeta, Vec<ArchivedRecord>), ArchiveError> {
        let unknown = |reason: String| format_error("?", -1, -1, reason);
        let container = container::read(bytes).map_err(|e| unknown(e.to_string()))?;
        let text = |name: &str| -> Result<String, ArchiveError> {
            let value = container
                .meta(name)
                .ok_or_else(|| unknown(format!("metadata {name} is missing")))?;
            String::from_utf8(value.to_vec())
                .map_err(|_| unknown(format!("metadata {name} is not text")))
        };
        let number = |name: &str| -> Result<i64, ArchiveError> {
            text(name)?
                .parse()
                .map_err(|_| unknown(format!("metadata {name} is not a number")))
        };
        let topic = text(META_TOPIC)?;
        let partition = number(META_PARTITION)? as i32;
        let (first_offset, last_offset) = (number(META_FIRST)?, number(META_LAST)?);
        let fail = |reason: String| format_error(&topic, partition, first_offset, reason);
        let records = container.records;
        for pair in records.windows(2) {
            if pair[1].offset <= pair[0].offset {
                return Err(fail("offsets are not increasing".into()));
            }
        }
        if let Some(record) = records
            .iter()
            .find(|r| r.topic != topic || r.partition != partition)
        {
            return Err(fail(format!(
                "holds a record of {}/{}",
                record.topic, record.partition
            )));
        }
        match (records.first(), records.last()) {
            (Some(first), Some(last))
                if first.offset >= first_offset && last.offset == last_offset => {}
            _ => {
                return Err(fail(
                    "its records do not span the offsets its metadata names".into(),
                ))
            }
        }
        let times = records.iter().filter_map(LogRecord::timestamp_ms);
        let meta = ObjectMeta {
            topic,
            partition,
            first_offset,
            last_offset,
            first_time_ms: times.clone().min(),
            last_time_ms: times.max(),
            records: records.len() as i64,
            bytes: bytes.len() as i64,
            sha256: hex::encode(Sha256::digest(bytes)),
        };
        Ok((meta, records))
    }
}

/// The record schema as compact JSON, for the container's header.
fn schema_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        // whitespace outside strings dropped (the schema's strings hold no quote escapes)
        let mut in_string = false;
        SCHEMA_JSON
            .chars()
            .filter(|c| {
                if *c == '"' {
                    in_string = !in_string;
                }
                in_string || !c.is_whitespace()
            })
            .collect()
    })
}

/// The container's sync marker: the first 16 bytes of SHA-256 over the object's identity.
fn sync_marker(topic: &str, partition: i32, first_offset: i64) -> [u8; 16] {
    let digest = Sha256::digest(format!(
        "factline.archive\0{topic}\0{partition}\0{first_offset}"
    ));
    let mut marker = [0u8; 16];
    marker.copy_from_slice(&digest[..16]);
    marker
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(offset: i64) -> ArchivedRecord {
        ArchivedRecord {
            topic: "orders".into(),
            partition: 1,
            offset,
            timestamp_ms: Some(1_000 + offset),
            key: Some(format!("o-{offset}").into_bytes()),
            value: Some(vec![0, 0, 0, 0, 1, offset as u8]),
            headers: vec![("event-id".into(), Some(offset.to_string().into_bytes()))],
        }
    }

    #[test]
    fn the_same_records_give_the_same_bytes_and_decode_back() {
        let records: Vec<_> = [5, 6, 9].into_iter().map(record).collect();
        let a = ArchiveObject::encode(3, &records).unwrap();
        let b = ArchiveObject::encode(3, &records).unwrap();
        assert_eq!(a.bytes, b.bytes);
        assert_ne!(a.bytes, ArchiveObject::encode(4, &records).unwrap().bytes);
        assert_eq!(a.meta.first_offset, 3);
        assert_eq!(a.meta.last_offset, 9);
        assert_eq!(a.meta.records, 3);
        assert_eq!(
            (a.meta.first_time_ms, a.meta.last_time_ms),
            (Some(1005), Some(1009))
        );
        let (meta, back) = ArchiveObject::decode(&a.bytes).unwrap();
        assert_eq!(meta, a.meta);
        assert_eq!(back, records);
    }

    #[test]
    fn records_out_of_order_or_of_two_partitions_are_refused() {
        assert!(ArchiveObject::encode::<ArchivedRecord>(0, &[]).is_err());
        assert!(ArchiveObject::encode(0, &[record(2), record(2)]).is_err());
        assert!(ArchiveObject::encode(0, &[record(3), record(2)]).is_err());
        assert!(ArchiveObject::encode(4, &[record(3)]).is_err());
        let mut other = record(4);
        other.partition = 0;
        assert!(ArchiveObject::encode(0, &[record(3), other]).is_err());
    }

    #[test]
    fn bytes_that_are_not_an_archive_object_are_refused() {
        assert!(ArchiveObject::decode(b"not avro").is_err());
        let mut bytes = ArchiveObject::encode(1, &[record(1), record(2)])
            .unwrap()
            .bytes;
        let last = bytes.len() - 20;
        bytes[last] ^= 0xff;
        assert!(ArchiveObject::decode(&bytes).is_err());
    }

    #[test]
    fn objects_are_avro_any_reader_reads_and_objects_avro_wrote_are_read() {
        let records: Vec<_> = (0..3000).map(record).collect();
        // what we write, apache-avro's generic reader reads (several blocks)
        let object = ArchiveObject::encode(0, &records).unwrap();
        let reader = apache_avro::Reader::new(object.bytes.as_slice()).unwrap();
        let back: Vec<ArchivedRecord> = reader
            .map(|v| ArchivedRecord::from_avro(v.unwrap()).unwrap())
            .collect();
        assert_eq!(back, records);
        // what apache-avro's writer wrote (objects archived before this encoder, with deflate)
        // and what other Avro writers write, we read
        for codec in [
            apache_avro::Codec::Deflate(apache_avro::DeflateSettings::default()),
            apache_avro::Codec::Zstandard(apache_avro::ZstandardSettings::default()),
            apache_avro::Codec::Null,
        ] {
            let mut writer =
                apache_avro::Writer::with_codec(crate::record::schema(), Vec::new(), codec)
                    .unwrap();
            for (key, value) in [
                (META_TOPIC, "orders"),
                (META_PARTITION, "1"),
                (META_FIRST, "0"),
                (META_LAST, "2999"),
            ] {
                writer.add_user_metadata(key.to_owned(), value).unwrap();
            }
            for r in &records {
                writer.append_value(r.to_avro()).unwrap();
            }
            let bytes = writer.into_inner().unwrap();
            let (meta, back) = ArchiveObject::decode(&bytes).unwrap();
            assert_eq!(back, records, "{codec:?}");
            assert_eq!((meta.first_offset, meta.last_offset), (0, 2999));
        }
    }

    #[test]
    fn objects_are_written_with_zstandard() {
        let records: Vec<_> = (0..100).map(record).collect();
        let object = ArchiveObject::encode(0, &records).unwrap();
        let container = container::read(&object.bytes).unwrap();
        assert_eq!(container.meta("avro.codec"), Some(&b"zstandard"[..]));
        assert_eq!(container.records, records);
    }

    proptest! {
        #[test]
        fn any_records_round_trip(
            offsets in proptest::collection::btree_set(0i64..1_000_000, 1..40),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
        ) {
            let records: Vec<_> = offsets.into_iter().map(|o| ArchivedRecord { key: key.clone(), ..record(o) }).collect();
            let object = ArchiveObject::encode(records[0].offset, &records).unwrap();
            let (_, back) = ArchiveObject::decode(&object.bytes).unwrap();
            prop_assert_eq!(back, records);
        }
    }
}
