//! History past Kafka's retention: before a projector consumes, every partition whose stored
//! position is below the log start (records deleted by retention, `DeleteRecords`, or a
//! topic restored without its oldest records) is fed from the event archive
//! ([`factline_archive`]) through the same triage and commit as live records, up to the log
//! start; the consumer then continues from Kafka at exactly that offset, with no gap and no
//! second copy. When neither the archive nor Kafka holds an offset, the projector stops with
//! an error naming the topic, partition and missing range: it never starts silently at the
//! log start with part of history missing.
//!
//! The opposite is checked too: a stored position past a partition's end (the topic was
//! deleted and created again, or the broker lost records it had acknowledged) stops the
//! projector with an error naming both offsets. Consuming on would take every record written
//! from then on, at offsets below the stored position, for one already applied.
//!
//! The archive is found through the `ARCHIVE_S3_*` variables (see
//! [`factline_archive::ArchiveConfig`], read at start into [`crate::Config::archive`]) and its
//! manifest in the projector's own database. While running, the consumer's
//! `auto.offset.reset` is `error`: a position that falls below the log start stops
//! consumption, and the instance reads that history here before joining again.

use std::collections::HashMap;
use std::time::Duration;

use factline_archive::reader::{objects_for, records_of, ReadError};
use factline_archive::{ArchiveError, Bucket, BucketConfig};
use rdkafka::consumer::Consumer;
use tokio_postgres::error::SqlState;

use super::consume::Runner;
use super::sink::Sink;
use crate::positions::{self, TopicPartition};
use crate::projection::Origin;
use crate::record::{Record, TopicNames};

/// History that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Offsets below the log start that the archive does not hold either.
    #[error(
        "{topic}/{partition}: offsets {first}..={last} are no longer in Kafka and not in the \
         archive ({why}); the projector cannot build a complete read model"
    )]
    Missing {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first missing offset.
        first: i64,
        /// The last missing offset.
        last: i64,
        /// Why the archive cannot give them.
        why: String,
    },
    /// A stored position past the partition's end: the log this projector read is gone.
    #[error(
        "{topic}/{partition}: this projector's stored position {stored} is past the end of the \
         log ({end}): the topic was deleted and created again, or the broker lost records. \
         Records written now would be taken for applied ones, so the projector stops. Rebuild \
         the read model under a new version, or delete this version's positions if the log is \
         really the same"
    )]
    Ahead {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The stored next offset.
        stored: i64,
        /// The partition's high watermark.
        end: i64,
    },
    /// Kafka, PostgreSQL or the object store failed: retried.
    #[error("reading history failed")]
    Transient(#[source] crate::error::Cause),
}

fn open(config: &BucketConfig) -> Result<Bucket, HistoryError> {
    Bucket::open(config).map_err(|e| HistoryError::Transient(Box::new(e)))
}

fn transient(e: impl std::error::Error + Send + Sync + 'static) -> HistoryError {
    HistoryError::Transient(Box::new(e))
}

/// The first partition (in order) whose stored position is past its high watermark, with both.
fn ahead(
    stored: &HashMap<TopicPartition, i64>,
    watermarks: &HashMap<TopicPartition, (i64, i64)>,
) -> Option<(TopicPartition, i64, i64)> {
    let mut ahead: Vec<(TopicPartition, i64, i64)> = watermarks
        .iter()
        .filter_map(|(tp, (_, high))| {
            let next = stored.get(tp).copied()?;
            (*high >= 0 && next > *high).then(|| (tp.clone(), next, *high))
        })
        .collect();
    ahead.sort();
    ahead.into_iter().next()
}

impl<K: Sink> Runner<K> {
    /// Reads from the archive what every partition of `topics` needs below its log start.
    /// Returns false if stopped meanwhile.
    pub(super) async fn read_history(&mut self, topics: &[String]) -> Result<bool, HistoryError> {
        let client = self.pool.get().await.map_err(transient)?;
        // the positions first: the watermarks read after them are at least as far as any
        // position stored before (another instance may store new ones meanwhile)
        let stored = positions::load(&**client, &self.name, self.version)
            .await
            .map_err(transient)?;
        let consumer = self.consumer.clone();
        let topics = topics.to_vec();
        let watermarks = tokio::task::spawn_blocking(move || {
            let mut watermarks: HashMap<TopicPartition, (i64, i64)> = HashMap::new();
            for topic in topics {
                let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
                for t in metadata.topics() {
                    for p in t.partitions() {
                        let range =
                            consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
                        watermarks.insert((topic.clone(), p.id()), range);
                    }
                }
            }
            Ok::<_, rdkafka::error::KafkaError>(watermarks)
        })
        .await
        .map_err(transient)?
        .map_err(transient)?;
        if let Some(((topic, partition), stored, end)) = ahead(&stored, &watermarks) {
            return Err(HistoryError::Ahead {
                topic,
                partition,
                stored,
                end,
            });
        }
        let mut gaps: Vec<(TopicPartition, i64, i64)> = watermarks
            .into_iter()
            .filter_map(|(tp, (low, _))| {
                let next = stored.get(&tp).copied().unwrap_or(0);
                (next < low).then_some((tp, next, low - 1))
            })
            .collect();
        if gaps.is_empty() {
            return Ok(true);
        }
        gaps.sort();
        let bucket = self
            .config
            .archive
            .as_ref()
            .map(|a| open(&a.bucket))
            .transpose()?;
        let mut names = TopicNames::default();
        for ((topic, partition), first, last) in gaps {
            let missing = |why: String| HistoryError::Missing {
                topic: topic.clone(),
                partition,
                first,
                last,
                why,
            };
            let Some(bucket) = &bucket else {
                return Err(missing(
                    "no archive is configured: ARCHIVE_S3_BUCKET is unset".into(),
                ));
            };
            let objects = match objects_for(&**client, &topic, partition, first, last).await {
                Ok(objects) => objects,
                Err(ReadError::Missing { first, last, .. }) => {
                    return Err(missing(format!(
                        "the archive has no object for offsets {first}..={last}"
                    )))
                }
                Err(ReadError::Archive(ArchiveError::Manifest(e)))
                    if e.code() == Some(&SqlState::UNDEFINED_TABLE) =>
                {
                    return Err(missing(
                        "this database holds no archive manifest (the archiver never ran here)"
                            .into(),
                    ))
                }
                Err(e) => return Err(transient(e)),
            };
            tracing::info!(
                topic,
                partition,
                first,
                last,
                objects = objects.len(),
                "reading history below the log start from the archive"
            );
            for entry in objects {
                let records = records_of(bucket, &entry, first, last)
                    .await
                    .map_err(transient)?;
                let records: Vec<Record> = records
                    .into_iter()
                    .map(|r| Record {
                        origin: Origin {
                            topic: names.get(&r.topic),
                            partition: r.partition,
                            offset: r.offset,
                        },
                        key: r.key,
                        payload: r.value,
                        headers: r
                            .headers
                            .iter()
                            .map(|(name, value)| (name.as_str(), value.as_deref()))
                            .collect(),
                        timestamp_ms: r.timestamp_ms,
                    })
                    .collect();
                for chunk in
                    records.chunks(self.config.batch_max(self.sink.spec().default_batch_max))
                {
                    if !self.flush(chunk.to_vec()).await {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_past_the_end_is_found_and_one_at_the_end_is_not() {
        let tp = |p: i32| ("orders".to_owned(), p);
        let stored = HashMap::from([(tp(0), 10), (tp(1), 7), (tp(2), 3)]);
        let watermarks = HashMap::from([(tp(0), (0, 10)), (tp(1), (0, 5)), (tp(2), (0, 2))]);
        assert_eq!(ahead(&stored, &watermarks), Some((tp(1), 7, 5)));
        let caught_up = HashMap::from([(tp(0), (0, 10)), (tp(1), (0, 7)), (tp(2), (4, 9))]);
        assert_eq!(ahead(&stored, &caught_up), None);
        // a partition with nothing stored is never ahead
        assert_eq!(ahead(&HashMap::new(), &watermarks), None);
    }
}
