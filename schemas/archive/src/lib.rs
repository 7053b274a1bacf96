//! The event archive: every record of every topic kept unchanged (key, value in the Confluent
//! wire format, headers, topic, partition, offset, timestamp) in S3-compatible object storage,
//! beyond Kafka's retention.
//!
//! - [`record`]: one archived record and its Avro schema;
//! - [`container`]: Avro object container files, written and read directly for that schema;
//! - [`object`]: a run of consecutive records of one partition as one Avro object container
//!   file, byte-identical whenever the same records are written again;
//! - [`naming`]: where an object lives in the bucket (topic, partition, first offset);
//! - [`store`]: the bucket (put-if-absent, so a crash and a retry never make a second copy);
//! - [`manifest`]: the PostgreSQL table of archived objects, and the offsets it covers;
//! - [`segmenter`]: where the archiver cuts a partition's records into objects;
//! - [`reader`]: a partition's archived records in an offset range, or the range missing.
//!
//! The archiver projector writes through these; rebuilds, replay and restore read through them.

pub mod config;
pub mod container;
pub mod error;
pub mod manifest;
pub mod naming;
pub mod object;
pub mod reader;
pub mod record;
pub mod segmenter;
pub mod store;

pub use config::ArchiveConfig;
pub use error::ArchiveError;
pub use manifest::{Coverage, Manifest};
pub use object::{ArchiveObject, ObjectMeta, UnsealedObject};
pub use reader::{read_range, ReadError};
pub use record::{ArchivedRecord, LogRecord};
pub use segmenter::{cut_len, CutRules};
pub use store::{Bucket, BucketConfig, Stored};
