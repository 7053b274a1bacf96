//! The consume loop: records are batched by count and time (records librdkafka holds already
//! are taken in one turn of the loop, up to [`READY_AT_ONCE`]); each batch is decoded and
//! committed through the sink ([`super::commit`]) while the next one is read (batches commit
//! one after the other, in order); transient failures are retried with capped
//! backoff on the same in-memory batch (nothing is skipped); rebalances discard the
//! uncommitted records of revoked partitions. Once a second the loop exports lag, records
//! the high watermarks that moved (or whose rows a commit wrote) and, while a new version
//! rebuilds, checks its progress ([`super::rebuild`]).
//! With nothing to read, the partitions are paused between short probes, and a consumer read
//! to its end paces its fetches ([`super::idle`]); a batch that no record can join before the
//! pace ends is committed at once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use factline_schemas::EventCodec;
use futures::FutureExt;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::commit::{self, BatchError};
use super::group::set_failure;
use super::idle::IdleFetch;
use super::lead;
use super::partitions::PerPartition;
use super::sink::{Input, Sink};
use super::triage::{Item, Outcome};
use super::wait::{backoff_for, sleep_or_stop, sleep_until_opt, stopped};
use crate::bookkeeping::Liveness;
use crate::config::Config;
use crate::consumer::{ProjectorConsumer, SharedState};
use crate::dead_letter::DeadLetterWriter;
use crate::decode::{decode, Decoded, RegistryRetry};
use crate::error::chain;
use crate::http::{self, SharedHealth};
use crate::positions::{self, TopicPartition};
use crate::progress::Estimator;
use crate::record::{Record, TopicNames};
use crate::telemetry::Metrics;

/// How often the loop exports lag, records high watermarks and checks a rebuild's progress.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(1);

/// The batch being read while the previous one commits.
struct NextBatch<'a> {
    records: &'a mut Vec<Record>,
    deadline: &'a mut Option<tokio::time::Instant>,
    error: &'a mut Option<KafkaError>,
    topics: &'a mut TopicNames,
    max: usize,
    wait: Duration,
}

/// A partition reported its end. When that starts a pace, a batch due before the pace ends
/// is committed now: no record can join it meanwhile, so waiting would only delay it.
fn partition_ended(
    idle: &mut IdleFetch,
    partition: i32,
    batch_deadline: &mut Option<tokio::time::Instant>,
) {
    let pace_end = idle.reached_end(partition);
    commit_before_pace(pace_end, batch_deadline, tokio::time::Instant::now());
}

/// Brings the open batch's deadline forward to `now` if a pace ending at `pace_end` began and
/// the batch would be due before it ends.
fn commit_before_pace(
    pace_end: Option<tokio::time::Instant>,
    batch_deadline: &mut Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) {
    if let Some(pace_end) = pace_end {
        if batch_deadline.is_some_and(|due| due <= pace_end) {
            *batch_deadline = Some(now);
        }
    }
}

/// Removes from `batch` the records of partitions revoked since the last look.
fn drop_revoked(state: &SharedState, batch: &mut Vec<Record>) {
    let revoked: Vec<TopicPartition> = std::mem::take(&mut state.lock().revoked);
    if revoked.is_empty() || batch.is_empty() {
        return;
    }
    let revoked: HashSet<TopicPartition> = revoked.into_iter().collect();
    let before = batch.len();
    batch.retain(|r| !revoked.contains(&(r.origin.topic.to_string(), r.origin.partition)));
    if batch.len() != before {
        tracing::info!(
            discarded = before - batch.len(),
            "uncommitted records of revoked partitions discarded"
        );
    }
}

/// How many records one turn of a consume loop's select takes from librdkafka's queue when
/// they are there already ([`ready`]): a turn per record (its futures, timers and wakers) cost
/// more than copying the record; the bound keeps a commit in flight polled meanwhile.
const READY_AT_ONCE: usize = 1024;

/// The next event if librdkafka's queue holds one now, while the batch of `len` records is
/// below `max` and this turn has taken fewer than [`READY_AT_ONCE`] (`taken` counts them).
fn ready<'c>(
    consumer: &'c ProjectorConsumer,
    taken: &mut usize,
    len: usize,
    max: usize,
) -> Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'c>>> {
    *taken += 1;
    if len >= max || *taken >= READY_AT_ONCE {
        return None;
    }
    consumer.recv().now_or_never()
}

/// Copies a received record into `batch`, unless it is to be read again once the lead topics
/// are read; a rebalance run inside `recv` drops what it revoked from the batch first.
fn take_record(
    consumer: &ProjectorConsumer,
    state: &SharedState,
    topics: &mut TopicNames,
    idle: &mut IdleFetch,
    batch: &mut Vec<Record>,
    message: &rdkafka::message::BorrowedMessage<'_>,
) {
    let record = Record::from_message(message, topics);
    if !lead::record_read(consumer, state, &record.origin) {
        return; // read again once the lead topics are read
    }
    idle.activity();
    drop_revoked(state, batch);
    batch.push(record);
}

/// What the loop works with; the membership parts are replaced when the instance joins again.
pub(super) struct Runner<K: Sink> {
    pub(super) config: Config,
    pub(super) sink: K,
    pub(super) name: String,
    pub(super) version: u32,
    pub(super) wanted: HashSet<String>,
    pub(super) pool: Pool,
    pub(super) codec: EventCodec,
    /// Decrypts personal fields in `decode` (the key store).
    pub(super) crypto: factline_keystore::FieldCrypto,
    pub(super) registry_retry: RegistryRetry,
    pub(super) dead_letters: DeadLetterWriter,
    pub(super) consumer: Arc<ProjectorConsumer>,
    pub(super) state: SharedState,
    pub(super) metrics: Metrics,
    pub(super) health: SharedHealth,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) liveness: Liveness,
    pub(super) last_event_ms: HashMap<TopicPartition, i64>,
    /// The high watermarks last written for readers (only moved ones are written again).
    pub(super) watermarks: positions::RecordedWatermarks,
    pub(super) estimator: Estimator,
    pub(super) retired: bool,
    /// Why the loop must stop and the membership be replaced (slot lock lost, fenced by the
    /// broker); with an explicit instance id the process exits instead.
    pub(super) failure: Arc<Mutex<Option<String>>>,
}

impl<K: Sink> Runner<K> {
    /// Consumes until stopped, retired, or the membership is lost; leaves every partition
    /// resumed.
    pub(super) async fn consume(&mut self) {
        let mut idle = IdleFetch::new(
            self.config.idle_pause_ms,
            self.config.fetch_pace_ms,
            self.consumer.clone(),
            self.state.clone(),
            self.metrics.clone(),
        );
        self.consume_loop(&mut idle).await;
        idle.finish();
    }

    async fn consume_loop(&mut self, idle: &mut IdleFetch) {
        let mut batch: Vec<Record> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        // a consume error met while a batch was being committed, handled next
        let mut deferred: Option<KafkaError> = None;
        let mut topics = TopicNames::default();
        let mut housekeeping_at = tokio::time::Instant::now();
        let mut recv_backoff = backoff_for(&self.config);
        let batch_max = self.config.batch_max(self.sink.spec().default_batch_max);
        let batch_wait = self
            .config
            .batch_max_wait(self.sink.spec().default_batch_wait);
        let consumer = self.consumer.clone();
        let mut stop = self.stop.clone();
        loop {
            drop_revoked(&self.state, &mut batch);
            if batch.is_empty() {
                // A batch emptied by a revocation has no deadline: a past one would win the
                // biased select below on every turn and starve `recv`, so the next assignment
                // would never be served (seen as a projector stuck after a broker restart).
                deadline = None;
            }
            // a stop is served by the select below (which commits what the batch holds)
            let stopping = *stop.borrow();
            let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if !stopping && !batch.is_empty() && (batch.len() >= batch_max || due) {
                // batches may follow each other without a turn of the select below (the next
                // one fills while this one commits): housekeeping must not wait for a pause
                if tokio::time::Instant::now() >= housekeeping_at {
                    self.housekeeping().await;
                    housekeeping_at = tokio::time::Instant::now() + HOUSEKEEPING_EVERY;
                    if self.retired {
                        return;
                    }
                }
                let records = std::mem::take(&mut batch);
                deadline = None;
                let mut next = NextBatch {
                    records: &mut batch,
                    deadline: &mut deadline,
                    error: &mut deferred,
                    topics: &mut topics,
                    max: batch_max,
                    wait: batch_wait,
                };
                if !self.flush_reading_next(records, &mut next, idle).await {
                    return; // stopped while retrying: the batch is discarded, nothing committed
                }
                idle.activity();
                continue;
            }
            if let Some(error) = deferred.take() {
                if !self.consume_failed(error, idle, &mut recv_backoff).await {
                    return;
                }
                continue;
            }
            if self.retired {
                return;
            }
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => {
                    drop_revoked(&self.state, &mut batch);
                    if !batch.is_empty() {
                        let records = std::mem::take(&mut batch);
                        self.flush(records).await;
                    }
                    return;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {}
                // before recv: a busy stream must not starve lag metrics and the rebuild swap
                _ = tokio::time::sleep_until(housekeeping_at) => {
                    self.housekeeping().await;
                    housekeeping_at = tokio::time::Instant::now() + HOUSEKEEPING_EVERY;
                }
                message = consumer.recv() => {
                    let (mut message, mut taken) = (message, 0);
                    loop {
                        match message {
                            Ok(message) => {
                                recv_backoff.reset();
                                take_record(&consumer, &self.state, &mut topics, idle,
                                    &mut batch, &message);
                                if deadline.is_none() {
                                    deadline = Some(tokio::time::Instant::now() + batch_wait);
                                }
                            }
                            Err(KafkaError::PartitionEOF(partition)) => {
                                lead::partition_ended(&consumer, &self.state, partition);
                                partition_ended(idle, partition, &mut deadline);
                                break;
                            }
                            Err(error) => {
                                if !self.consume_failed(error, idle, &mut recv_backoff).await {
                                    return;
                                }
                                break;
                            }
                        }
                        match ready(&consumer, &mut taken, batch.len(), batch_max) {
                            Some(next) => message = next,
                            None => break,
                        }
                    }
                }
                // after recv: a record waiting to be read ends the idle state instead
                _ = sleep_until_opt(idle.deadline(!batch.is_empty())),
                    if idle.deadline(!batch.is_empty()).is_some() => idle.turn(),
            }
        }
    }

    /// A consume error: false when the loop must end (a position out of the log's range, a
    /// fatal client error), otherwise after a backoff pause (or a stop, served next turn).
    async fn consume_failed(
        &mut self,
        error: KafkaError,
        idle: &mut IdleFetch,
        backoff: &mut super::backoff::Backoff,
    ) -> bool {
        if let KafkaError::PartitionEOF(partition) = error {
            lead::partition_ended(&self.consumer, &self.state, partition);
            // (no batch here to commit early: the loops handle ends themselves)
            let _pace_end = idle.reached_end(partition);
            return true;
        }
        if let KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset) = error {
            // auto.offset.reset=error: a position is below the log start (or past the end);
            // the instance joins again after reading the history from the archive (never a
            // silent jump to the log start)
            set_failure(
                &self.failure,
                format!("a position is out of the log's range ({error}): reading history"),
            );
            return false;
        }
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            // e.g. fenced: another member joined with this instance id
            set_failure(
                &self.failure,
                format!("fatal kafka error {code:?}: {reason}"),
            );
            return false;
        }
        self.metrics.retry("consume");
        tracing::warn!(%error, "consume failed, retrying");
        let mut stop = self.stop.clone();
        sleep_or_stop(&mut stop, backoff.next_delay()).await;
        true
    }

    /// Commits `records` ([`Self::flush`]) while the next batch is read: during the commit's
    /// round trips (the database, the bucket, Elasticsearch) records keep arriving into
    /// `next`, up to a full batch, so reading the log overlaps writing the sink. A revocation
    /// met meanwhile drops the revoked partitions' records from `next` at once, as the loop
    /// does; the batch being committed is fenced by the positions its transaction locks, like
    /// any late batch of a partition that moved. A consume error ends the reading and is left
    /// in `next` for the loop. Returns what [`Self::flush`] returns.
    async fn flush_reading_next(
        &mut self,
        records: Vec<Record>,
        next: &mut NextBatch<'_>,
        idle: &mut IdleFetch,
    ) -> bool {
        let consumer = self.consumer.clone();
        let state = self.state.clone();
        let flush = self.flush(records);
        tokio::pin!(flush);
        loop {
            let reading = next.error.is_none() && next.records.len() < next.max;
            tokio::select! {
                biased;
                flushed = &mut flush => return flushed,
                // a pace ends on time while a batch commits
                _ = sleep_until_opt(idle.deadline(true)), if idle.deadline(true).is_some() => {
                    idle.turn();
                }
                message = consumer.recv(), if reading => {
                    let (mut message, mut taken) = (message, 0);
                    loop {
                        match message {
                            Ok(message) => {
                                take_record(&consumer, &state, next.topics, idle, next.records,
                                    &message);
                                next.deadline
                                    .get_or_insert_with(|| tokio::time::Instant::now() + next.wait);
                            }
                            Err(KafkaError::PartitionEOF(partition)) => {
                                lead::partition_ended(&consumer, &state, partition);
                                partition_ended(idle, partition, next.deadline);
                                break;
                            }
                            Err(error) => {
                                *next.error = Some(error);
                                break;
                            }
                        }
                        match ready(&consumer, &mut taken, next.records.len(), next.max) {
                            Some(more) => message = more,
                            None => break,
                        }
                    }
                }
            }
        }
    }

    /// Commits a batch, retrying transient failures with backoff. Returns false if stopped
    /// before it could commit.
    pub(super) async fn flush(&mut self, records: Vec<Record>) -> bool {
        let mut backoff = backoff_for(&self.config);
        let mut stop = self.stop.clone();
        // the records move into the batch's items once; each attempt decodes them again
        let mut items: Vec<Item> = records
            .into_iter()
            .map(|record| Item {
                record,
                decoded: Decoded::Raw,
            })
            .collect();
        loop {
            let started = Instant::now();
            match self.try_flush(&mut items).await {
                Ok(outcome) => {
                    self.committed(&items, &outcome, started.elapsed());
                    return true;
                }
                Err(error) => {
                    let stage = error.stage();
                    let error = chain(&error);
                    self.metrics.retry(stage);
                    http::update(&self.health, |h| {
                        h.state = "retrying";
                        h.last_error = Some(error.clone());
                    });
                    let delay = backoff.next_delay();
                    tracing::warn!(stage, %error, attempt = backoff.attempts(),
                        delay_ms = delay.as_millis() as u64, "batch failed, retrying");
                    if self.check_retired().await {
                        return false;
                    }
                    if sleep_or_stop(&mut stop, delay).await {
                        tracing::info!("stopping with an uncommitted batch, it will be re-read");
                        return false;
                    }
                }
            }
        }
    }

    /// Loads the data keys the batch's personal fields name in one go (otherwise one query
    /// per key not cached); a failure only means the keys are looked up one by one.
    async fn prefetch_keys(&self, items: &[Item]) {
        let ids: Vec<uuid::Uuid> = items
            .iter()
            .filter_map(|item| item.record.payload.as_deref())
            .flat_map(factline_keystore::sealed::key_ids_in)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(error) = self.crypto.store().prefetch(&ids).await {
            tracing::debug!(%error, "prefetching the batch's data keys failed");
        }
    }

    async fn try_flush(&self, items: &mut [Item]) -> Result<Outcome, BatchError> {
        let spec = self.sink.spec();
        if spec.input == Input::Events {
            let crypto = spec.opens_personal_data.then_some(&self.crypto);
            if crypto.is_some() {
                self.prefetch_keys(items).await;
            }
            for item in items.iter_mut() {
                item.decoded = decode(
                    &self.codec,
                    crypto,
                    &self.wanted,
                    &item.record,
                    &self.registry_retry,
                )
                .await?;
            }
        }
        let mut client = self.pool.get().await?;
        let high_watermarks = self.state.lock().high_watermarks.clone();
        commit::commit(
            &self.sink,
            &mut client,
            &self.dead_letters,
            items,
            &high_watermarks,
        )
        .await
    }

    fn committed(&mut self, items: &[Item], outcome: &Outcome, took: Duration) {
        self.metrics.batch(
            outcome.applied,
            outcome.duplicates,
            outcome.dead_lettered,
            took,
        );
        for (event_type, count) in &outcome.ignored {
            self.metrics.ignored(event_type, *count);
        }
        let mut last_ms: PerPartition<'_, i64> = PerPartition::default();
        for Item { record, .. } in items {
            if let Some(ms) = record.timestamp_ms {
                *last_ms.entry(&record.origin.topic, record.origin.partition, || ms) = ms;
            }
        }
        self.last_event_ms.extend(last_ms.into_owned());
        tracing::debug!(
            records = items.len(),
            applied = outcome.applied,
            duplicates = outcome.duplicates,
            behind = outcome.behind,
            dead_lettered = outcome.dead_lettered,
            took_ms = took.as_millis() as u64,
            "batch committed"
        );
        http::update(&self.health, |h| {
            h.state = "running";
            h.last_error = None;
            h.batches += 1;
        });
        let assigned = {
            let mut state = self.state.lock();
            for (tp, next) in &outcome.positions {
                let entry = state.committed.entry(tp.clone()).or_insert(*next);
                *entry = (*entry).max(*next);
            }
            state.assigned.clone()
        };
        // the commit wrote these rows (and may have created them): their watermarks are
        // written again at the next housekeeping
        self.watermarks.forget(outcome.positions.keys());
        self.update_lag();
        if self.config.commit_to_kafka {
            // Informational only: positions in PostgreSQL are the truth. Stored here, sent by
            // librdkafka's auto-commit (every `auto.commit.interval.ms`, and on revocation).
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &outcome.positions {
                if assigned.contains(&(topic.clone(), *partition)) {
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
                }
            }
            if tpl.count() > 0 {
                if let Err(error) = self.consumer.store_offsets(&tpl) {
                    tracing::debug!(%error, "storing the informational kafka offsets failed");
                }
            }
        }
    }

    fn update_lag(&self) {
        let (assigned, committed, high) = {
            let state = self.state.lock();
            (
                state.assigned.clone(),
                state.committed.clone(),
                state.high_watermarks.clone(),
            )
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        for tp in &assigned {
            let Some(high) = high.get(tp) else { continue };
            let next = committed.get(tp).copied().unwrap_or(0);
            let lag = (high - next).max(0);
            let seconds = match (lag, self.last_event_ms.get(tp)) {
                (0, _) => 0.0,
                (_, Some(last)) => ((now_ms - last).max(0) as f64) / 1000.0,
                (_, None) => 0.0,
            };
            self.metrics.lag(&tp.0, tp.1, lag, seconds);
        }
    }

    /// Once a second: lag metrics, high watermarks for readers, and the rebuild swap.
    async fn housekeeping(&mut self) {
        lead::check(&self.consumer, &self.state);
        self.update_lag();
        let mut partitions: Vec<String> = self
            .state
            .lock()
            .assigned
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        partitions.sort();
        http::update(&self.health, |h| h.partitions = partitions);
        let (held, assignment) = {
            let state = self.state.lock();
            let held: HashMap<TopicPartition, i64> = state
                .high_watermarks
                .iter()
                .filter(|(tp, _)| state.assigned.contains(*tp))
                .map(|(tp, h)| (tp.clone(), *h))
                .collect();
            (held, state.assignments)
        };
        let due = self
            .watermarks
            .due(held, assignment, std::time::Instant::now());
        if !due.is_empty() {
            self.record_high_watermarks(due).await;
        }
        self.rebuild_turn().await;
    }

    /// Writes `due` for readers ([`positions::record_high_watermarks`]); remembered once written.
    async fn record_high_watermarks(&mut self, due: HashMap<TopicPartition, i64>) {
        let Ok(client) = self.pool.get().await else {
            return;
        };
        match positions::record_high_watermarks(&client, &self.name, self.version, &due).await {
            Ok(()) => self.watermarks.recorded(due),
            Err(error) => tracing::debug!(%error, "cannot record high watermarks"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_due_before_the_pace_ends_is_committed_at_once_and_a_later_one_waits() {
        let now = tokio::time::Instant::now();
        let ms = Duration::from_millis;
        let pace_end = Some(now + ms(10));
        let mut due_within = Some(now + ms(4));
        commit_before_pace(pace_end, &mut due_within, now);
        assert_eq!(due_within, Some(now));
        let mut due_after = Some(now + ms(100));
        commit_before_pace(pace_end, &mut due_after, now);
        assert_eq!(
            due_after,
            Some(now + ms(100)),
            "records may still join it after the pace"
        );
        let mut no_batch = None;
        commit_before_pace(pace_end, &mut no_batch, now);
        assert_eq!(no_batch, None);
        let mut no_pace = Some(now + ms(4));
        commit_before_pace(None, &mut no_pace, now);
        assert_eq!(no_pace, Some(now + ms(4)));
    }
}
