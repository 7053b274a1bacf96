//! The archive sink: every record of every event topic and of its dead-letter topic, kept
//! unchanged in S3-compatible object storage ([`factline_archive`]), with the manifest of
//! objects in PostgreSQL, written in the runtime's transaction with the archiver's positions.
//!
//! It takes records, not events ([`Input::Records`]): nothing is decoded, deduplicated or
//! dead-lettered; undecodable records are archived like any other. Each batch is cut into
//! objects per partition (at most `ARCHIVE_OBJECT_MAX_RECORDS` records or
//! `ARCHIVE_OBJECT_MAX_BYTES` bytes each, and at the batch's end, so the newest records are
//! archived without waiting for more traffic). An object starts where the manifest's chain of
//! the partition ends and is named by that offset; it is written put-if-absent (the batch's
//! partitions concurrently), and the manifest rows are inserted once every object is in the
//! bucket, in the runtime's transaction. After a crash
//! the batch is read again from the last committed position: an object written before the
//! crash is found at the same key and adopted (its bytes are what the manifest records, and
//! the records it holds are not written again), so no record is archived twice and none is
//! skipped, whatever the batch boundaries were.

use std::time::Duration;

use deadpool_postgres::Object;
use factline_archive::manifest::MIGRATION;
use factline_archive::segmenter::cut_len;
use factline_archive::{
    naming, ArchiveError, ArchiveObject, Bucket, CutRules, LogRecord, Manifest, ObjectMeta, Stored,
    UnsealedObject,
};
use tokio_postgres::Transaction;

pub use factline_archive::ArchiveConfig;

use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::Config;
use crate::projection::Migration;
use crate::record::Record;
use crate::runtime::partitions::PerPartition;
use crate::runtime::sink::{Applied, Batch, Input, Sink, SinkSpec};

/// The archive projector's name (consumer group, positions, `/projections`).
pub const NAME: &str = "event_archive";
/// Its version: the archive has one format; a new version would be a new archive.
pub const VERSION: u32 = 1;

/// A failure writing the archive: retried with backoff, nothing is skipped.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveSinkError {
    /// The bucket or the manifest failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// PostgreSQL failed.
    #[error("postgresql failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// A task writing a partition's objects failed to run.
    #[error("an archive write task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The object at a key holds other records than the log's: another log is archived under
    /// the same bucket and prefix. Nothing is adopted or written; it is retried (and logged)
    /// until the configuration is fixed.
    #[error(
        "archive object {key} holds records that differ from the log's at offset {offset}: \
         is another cluster archived under the same ARCHIVE_S3_BUCKET and ARCHIVE_S3_PREFIX?"
    )]
    Foreign {
        /// The object's key.
        key: String,
        /// The first offset that differs.
        offset: i64,
    },
}

/// The sink writing the archive.
pub struct ArchiveSink {
    spec: SinkSpec,
    bucket: Bucket,
    rules: CutRules,
}

impl ArchiveSink {
    /// The archive of `topics` (without prefix; each with its dead-letter topic) in `archive`'s
    /// bucket.
    pub fn new(topics: &[String], archive: &ArchiveConfig) -> Result<ArchiveSink, ArchiveError> {
        Ok(ArchiveSink {
            spec: SinkSpec {
                kind: "archive",
                name: NAME.to_owned(),
                version: VERSION,
                topics: factline_schemas::topics::with_dead_letter_topics(topics),
                lead_topics: Vec::new(),
                event_types: Vec::new(),
                read_models: Vec::new(),
                // larger objects (a batch is cut into objects at its end), fewer round trips
                // to the bucket and PostgreSQL per record
                default_batch_max: 20_000,
                default_batch_wait: Duration::from_millis(500),
                input: Input::Records,
                sequenced: false,
                // records are kept as read, never decoded
                opens_personal_data: false,
            },
            bucket: Bucket::open(&archive.bucket)?,
            rules: archive.rules,
        })
    }
}

/// Writes one partition's records of a batch (in offset order, each offset once; those below
/// `next`, where the manifest's chain of the partition ends, are archived already) as objects
/// starting at `next`: put-if-absent, an object already at a key adopted if its records are
/// the log's. Returns what the manifest must record, in offset order. Touches no database:
/// the batch's partitions are written concurrently, then recorded in the runtime's
/// transaction.
///
/// Each object's records are encoded here, then compressed and put by a task of its own (the
/// compression on a blocking thread): the consumer reads the next batch meanwhile. The next
/// object starts where the one in flight ends if it is created as encoded; if an object
/// already at its key is adopted with other bounds, the next one is encoded again from where
/// the adopted one ends.
async fn write_partition(
    bucket: &Bucket,
    rules: CutRules,
    mut next: i64,
    records: &[&Record],
) -> Result<Vec<(ObjectMeta, String)>, ArchiveSinkError> {
    let (topic, partition) = (&*records[0].origin.topic, records[0].origin.partition);
    // records already archived (an object adopted, a batch read again) are skipped
    let from = |offset: i64| &records[records.partition_point(|r| r.origin.offset < offset)..];
    let mut written = Vec::new();
    let mut in_flight: Option<Put> = None;
    loop {
        let planned = in_flight.as_ref().map_or(next, |put| put.last_offset + 1);
        let pending = from(planned);
        let encoded = match pending.is_empty() {
            true => None,
            false => Some(ArchiveObject::unsealed(
                planned,
                &pending[..cut_len(pending, rules)],
            )?),
        };
        if let Some(put) = in_flight.take() {
            let (meta, key) = put.finish(records).await?;
            next = meta.last_offset + 1;
            written.push((meta, key));
        }
        match encoded {
            Some(object) if object.first_offset() == next => {
                in_flight = Some(Put::start(bucket, topic, partition, object));
            }
            // encoded past an object adopted with other bounds: encoded again from `next`
            _ if !from(next).is_empty() => {}
            _ => return Ok(written),
        }
    }
}

/// An object being sealed and put, in a task of its own.
struct Put {
    key: String,
    last_offset: i64,
    task: tokio::task::JoinHandle<Result<(ObjectMeta, Stored), ArchiveSinkError>>,
}

impl Put {
    fn start(bucket: &Bucket, topic: &str, partition: i32, object: UnsealedObject) -> Put {
        let key = naming::object_key(bucket.prefix(), topic, partition, object.first_offset());
        let last_offset = object.last_offset();
        let (bucket, at) = (bucket.clone(), key.clone());
        let task = tokio::spawn(async move {
            let sealed = tokio::task::spawn_blocking(move || object.seal())
                .await
                .map_err(ArchiveSinkError::Task)??;
            let stored = bucket.put_if_absent(&at, sealed.bytes).await?;
            Ok((sealed.meta, stored))
        });
        Put {
            key,
            last_offset,
            task,
        }
    }

    /// What the manifest records once the put is done: the object as encoded, or the one
    /// already at its key if every record it holds that `records` (the partition's, in offset
    /// order) also holds is the same, byte for byte.
    async fn finish(self, records: &[&Record]) -> Result<(ObjectMeta, String), ArchiveSinkError> {
        let key = self.key;
        let (meta, stored) = self.task.await.map_err(ArchiveSinkError::Task)??;
        match stored {
            Stored::Created => {
                metrics::counter!("factline_projector_archive_objects_total").increment(1);
                metrics::counter!("factline_projector_archive_bytes_total")
                    .increment(meta.bytes as u64);
                Ok((meta, key))
            }
            Stored::AlreadyThere(existing) => {
                let (meta, theirs) = ArchiveObject::decode(&existing)?;
                let ours = |offset: i64| {
                    records
                        .binary_search_by_key(&offset, |r| r.origin.offset)
                        .ok()
                        .map(|at| records[at])
                };
                if let Some(differs) = theirs
                    .iter()
                    .find(|r| ours(r.offset).is_some_and(|o| !o.same_as(*r)))
                {
                    return Err(ArchiveSinkError::Foreign {
                        key,
                        offset: differs.offset,
                    });
                }
                tracing::info!(%key, last_offset = meta.last_offset,
                    "archive object already written (a retried batch): adopted");
                Ok((meta, key))
            }
        }
    }
}

/// A consumed record is written to the archive as it is, without a copy into an
/// [`factline_archive::ArchivedRecord`] first.
impl LogRecord for Record {
    fn topic(&self) -> &str {
        &self.origin.topic
    }
    fn partition(&self) -> i32 {
        self.origin.partition
    }
    fn offset(&self) -> i64 {
        self.origin.offset
    }
    fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        self.headers.iter()
    }
}

impl Sink for ArchiveSink {
    type Error = ArchiveSinkError;

    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    async fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> Result<Liveness, BootstrapError> {
        let migrations = [Migration::new("001_archive_manifest", MIGRATION)];
        bookkeeping::bootstrap(client, registration, &migrations, &[], None).await
    }

    async fn apply(
        &self,
        tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> Result<Applied, ArchiveSinkError> {
        // the batch's records per partition, borrowed
        let mut partitions: PerPartition<'_, Vec<&Record>> = PerPartition::default();
        for &record in batch.records() {
            let (topic, partition) = (&*record.origin.topic, record.origin.partition);
            partitions.entry(topic, partition, Vec::new).push(record);
        }
        // where each partition's chain ends (read in the transaction, whose position rows the
        // runtime holds), then every partition's objects written at once: each partition
        // encodes its objects in turn while the one before is put, the puts run as tasks
        let mut partitions: Vec<_> = partitions.into_owned().collect();
        partitions.sort_by(|(a, _), (b, _)| a.cmp(b));
        let keys: Vec<(String, i32)> = partitions.iter().map(|(at, _)| at.clone()).collect();
        let chain_ends = Manifest::next_offsets(&*tx, &keys).await?;
        let writes = partitions.into_iter().map(|(at, mut records)| {
            records.sort_by_key(|r| r.origin.offset);
            records.dedup_by_key(|r| r.origin.offset);
            let next = chain_ends
                .get(&at)
                .copied()
                .unwrap_or(records[0].origin.offset);
            async move { write_partition(&self.bucket, self.rules, next, &records).await }
        });
        let written = futures::future::try_join_all(writes).await?;
        // recorded in the runtime's transaction, with the positions
        let objects: Vec<(ObjectMeta, String)> = written.into_iter().flatten().collect();
        Manifest::record_all(&*tx, &objects).await?;
        Ok(Applied::default())
    }

    async fn swap(&self, client: &mut Object, _previous: u32) -> Result<bool, ArchiveSinkError> {
        bookkeeping::swap_live::<ArchiveSinkError>(client, NAME, VERSION, &[]).await
    }
}

/// Runs the archiver until `shutdown` resolves: the runtime's configuration, with the archive's
/// (`config.archive`, from `ARCHIVE_*`), every topic of the built-in catalog.
pub async fn run_archive<S>(config: Config, shutdown: S) -> Result<(), crate::RunError>
where
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let archive = config
        .archive
        .clone()
        .ok_or(crate::ConfigError::Missing("ARCHIVE_S3_BUCKET"))?;
    let topics = factline_schemas::Catalog::builtin().topics();
    let sink = ArchiveSink::new(&topics, &archive).map_err(|e| crate::ConfigError::Invalid {
        name: "ARCHIVE_S3_*",
        reason: e.to_string(),
    })?;
    crate::runtime::run::run_sink(config, sink, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_archiver_without_a_bucket_names_the_missing_variable() {
        let config = Config::new(
            "127.0.0.1:9092",
            "http://127.0.0.1:8081",
            "postgres://factline@127.0.0.1:55432/factline",
        );
        let error = run_archive(config, async {}).await.unwrap_err();
        assert!(error.to_string().contains("ARCHIVE_S3_BUCKET"), "{error}");
    }
}
