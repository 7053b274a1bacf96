//! Applies one batch in ONE PostgreSQL transaction: the read-model changes, the applied event
//! ids and the positions commit together, and dead letters are written before the commit.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use uuid::Uuid;

use crate::dead_letter::{DeadLetter, DeadLetterWriter};
use crate::decode::Decoded;
use crate::error::{pg_message, ProjectionError};
use crate::positions::{self, Advance, TopicPartition};
use crate::projection::Projection;
use crate::record::Record;

/// A consumed record and what it decoded to.
#[derive(Debug)]
pub struct Item {
    /// The record as read.
    pub record: Record,
    /// What it is to the projection.
    pub decoded: Decoded,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Events applied.
    pub applied: u64,
    /// Events skipped as already applied (same `event_id`).
    pub duplicates: u64,
    /// Records below the stored position (already covered by an earlier commit).
    pub behind: u64,
    /// Ignored records per event type.
    pub ignored: BTreeMap<String, u64>,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// The new next offset per partition.
    pub positions: HashMap<TopicPartition, i64>,
}

/// A batch failed for a reason worth retrying; nothing was committed.
#[derive(Debug, thiserror::Error)]
#[error("batch failed transiently: {0}")]
pub struct TransientBatchError(pub String);

impl From<tokio_postgres::Error> for TransientBatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        TransientBatchError(pg_message(&e))
    }
}

/// Applies and commits a batch. On error nothing is committed (dead letters may have been
/// written: dead-lettering is at-least-once).
pub async fn commit<P: Projection>(
    projection: &P,
    dead_letters: &DeadLetterWriter,
    client: &mut Object,
    items: &[Item],
    high_watermarks: &HashMap<TopicPartition, i64>,
) -> Result<Outcome, TransientBatchError> {
    let projector = projection.name().to_owned();
    let version = projection.version();
    let mut outcome = Outcome::default();
    let mut tx = client.transaction().await?;

    // Lock the position rows of the partitions in this batch: the stored next offset decides
    // which records are still to apply.
    let partitions: Vec<TopicPartition> = items
        .iter()
        .map(|i| (i.record.origin.topic.clone(), i.record.origin.partition))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored = positions::lock(&tx, &projector, version, &partitions).await?;

    // Event ids already applied in earlier batches.
    let ids: Vec<Uuid> = items
        .iter()
        .filter_map(|i| match &i.decoded {
            Decoded::Event(e) => Some(e.envelope.event_id),
            _ => None,
        })
        .collect();
    let mut seen: HashSet<Uuid> = tx
        .query(
            "SELECT event_id FROM factline_projector_applied \
             WHERE projector = $1 AND version = $2 AND event_id = ANY($3)",
            &[&projector, &(version as i32), &ids],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();

    // Every fresh event at once, in one savepoint; a rejection falls back to one event at a
    // time below, each in its own savepoint, which isolates the offending record.
    let mut fresh_ids = seen.clone();
    let fresh: Vec<&crate::projection::Event> = items
        .iter()
        .filter(|i| {
            let tp = (i.record.origin.topic.clone(), i.record.origin.partition);
            stored
                .get(&tp)
                .is_none_or(|next| i.record.origin.offset >= *next)
        })
        .filter_map(|i| match &i.decoded {
            Decoded::Event(e) if fresh_ids.insert(e.envelope.event_id) => Some(&**e),
            _ => None,
        })
        .collect();
    let batch_applied = if fresh.is_empty() {
        true
    } else {
        let savepoint = tx.savepoint("factline_batch").await?;
        match projection.apply_batch(&savepoint, &fresh).await {
            Ok(()) => {
                savepoint.commit().await?;
                true
            }
            Err(e @ ProjectionError::Transient(_)) => {
                return Err(TransientBatchError(crate::error::chain(&e)))
            }
            Err(e @ ProjectionError::Permanent(_)) => {
                savepoint.rollback().await?;
                tracing::debug!(error = %crate::error::chain(&e), "batch rejected, applying event by event");
                false
            }
        }
    };

    let mut applied_ids = Vec::new();
    let mut letters = Vec::new();
    let mut last: HashMap<TopicPartition, (i64, Option<DateTime<Utc>>)> = HashMap::new();
    for item in items {
        let origin = &item.record.origin;
        let tp = (origin.topic.clone(), origin.partition);
        if stored.get(&tp).is_some_and(|next| origin.offset < *next) {
            outcome.behind += 1;
            continue;
        }
        let mut occurred_at = item
            .record
            .timestamp_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        match &item.decoded {
            Decoded::Ignored { event_type } => {
                tracing::debug!(projector = %projector, event_type, offset = origin.offset,
                    "event type not consumed, skipped");
                *outcome.ignored.entry(event_type.clone()).or_default() += 1;
            }
            Decoded::Poison { error } => {
                letters.push(DeadLetter {
                    record: item.record.clone(),
                    error: error.clone(),
                });
            }
            Decoded::Event(event) => {
                occurred_at = Some(event.envelope.occurred_at);
                let id = event.envelope.event_id;
                if !seen.insert(id) {
                    outcome.duplicates += 1;
                } else if batch_applied {
                    applied_ids.push(id);
                    outcome.applied += 1;
                } else {
                    let savepoint = tx.savepoint("factline_event").await?;
                    match projection.apply(&savepoint, event).await {
                        Ok(()) => {
                            savepoint.commit().await?;
                            applied_ids.push(id);
                            outcome.applied += 1;
                        }
                        Err(e @ ProjectionError::Transient(_)) => {
                            return Err(TransientBatchError(crate::error::chain(&e)))
                        }
                        Err(e @ ProjectionError::Permanent(_)) => {
                            savepoint.rollback().await?;
                            // A rejected id is not recorded: a later copy is judged again.
                            seen.remove(&id);
                            letters.push(DeadLetter {
                                record: item.record.clone(),
                                error: crate::error::chain(&e),
                            });
                        }
                    }
                }
            }
        }
        let entry = last.entry(tp).or_insert((origin.offset, occurred_at));
        if origin.offset >= entry.0 {
            *entry = (origin.offset, occurred_at.or(entry.1));
        }
    }

    if !applied_ids.is_empty() {
        tx.execute(
            "INSERT INTO factline_projector_applied (projector, version, event_id) \
             SELECT $1, $2, unnest($3::uuid[]) ON CONFLICT DO NOTHING",
            &[&projector, &(version as i32), &applied_ids],
        )
        .await?;
    }
    for letter in &letters {
        tracing::warn!(projector = %projector, topic = %letter.record.origin.topic,
            partition = letter.record.origin.partition, offset = letter.record.origin.offset,
            error = %letter.error, "record dead-lettered");
        dead_letters
            .write(letter)
            .await
            .map_err(|e| TransientBatchError(e.to_string()))?;
    }
    crate::dead_letter::record_rows(&*tx, &projector, version, &letters).await?;
    outcome.dead_lettered = letters.len() as u64;
    let mut advances = Vec::with_capacity(last.len());
    for (tp, (offset, last_event_at)) in last {
        outcome.positions.insert(tp.clone(), offset + 1);
        let advance = Advance {
            next_offset: offset + 1,
            high_watermark: high_watermarks.get(&tp).copied(),
            last_event_at,
        };
        advances.push((tp, advance));
    }
    positions::advance(&tx, &projector, version, &advances).await?;
    tx.commit().await?;
    Ok(outcome)
}
