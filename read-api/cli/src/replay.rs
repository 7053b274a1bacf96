//! `factline replay`: re-sends archived records of a topic to a topic (the same one by
//! default), byte-identical (key, value, headers, timestamp, partition number) plus headers
//! marking the replay: `factline-replay-id`, `factline-replay-topic`,
//! `factline-replay-partition`, `factline-replay-offset`.
//!
//! Records come from the event archive ([`factline_archive`]: its manifest in PostgreSQL, its
//! objects in the bucket named by `ARCHIVE_S3_*`), so a replay reaches past Kafka's retention.
//! A selection narrows them: partitions, a time range (the records' timestamps), a key, an
//! event type. A dry run is the default and prints how many records would be sent per
//! partition; `--yes` sends them, at most `--rate` per second, at most `--limit` in all.
//!
//! `factline restore` is the same path for disaster recovery: a topic's whole archived history
//! into an empty topic (a new cluster), byte-identical and without replay headers, partition by
//! partition in offset order; run again, it continues after what the target holds.
//!
//! **Streamed.** A replay holds one archive object's records at a time (at most
//! `ARCHIVE_OBJECT_MAX_RECORDS`), whatever the size of the history: it counts what it will
//! send from the manifest (reading only the objects a selection must look into), then reads
//! the objects again as it sends. Objects whose record times are all outside `--from`/`--until`
//! are not read at all.
//!
//! **Resumable, never twice.** Each replay has an id (printed; `--replay-id` names it). Before
//! sending, the replay records in `factline_replays` where the target partitions ended; a
//! replay resumed with the same id first reads what it already sent there (the records
//! carrying its id) and continues after the last one, so an interrupted replay sends every
//! selected record exactly once. Replaying into a topic that projectors consume changes no
//! read model: the copies carry their original event ids, and projectors skip events they
//! applied (within their dedupe window).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use factline_archive::manifest::{Manifest, ManifestEntry};
use factline_archive::reader::{records_of, ReadError};
use factline_archive::{ArchiveConfig, ArchivedRecord, Bucket};
use factline_service::env::Env;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::json;
use tokio_postgres::GenericClient;

use crate::config::Settings;
use crate::error::{CliError, EXIT_OK};
use crate::output::{self, Format};
use crate::progress::Progress;

/// The long help of `replay`.
pub const HELP: &str = "\
Re-send archived records of a topic (from the event archive, so past Kafka's retention) to a
topic, the same one by default: byte-identical (key, value, headers, timestamp, partition
number) plus the headers factline-replay-id, -topic, -partition and -offset. A dry run unless
--yes: it prints how many records would be sent per partition. An interrupted replay resumes
with --replay-id ID --yes and sends every selected record exactly once. Replaying into a topic
the projectors consume changes no read model: the copies keep their event ids.

--into-rebuild NAME shows instead what a rebuild (a new version) of projector NAME reads: per
topic and partition, the offsets and records from the archive (below Kafka's log start) and
from Kafka, and any range neither holds. A rebuild starts when the new version runs; this is a
dry run only.";

/// The header naming the replay a copy belongs to.
pub const HEADER_REPLAY_ID: &str = "factline-replay-id";
/// The header naming the copy's original topic.
pub const HEADER_REPLAY_TOPIC: &str = "factline-replay-topic";
/// The header naming the copy's original partition.
pub const HEADER_REPLAY_PARTITION: &str = "factline-replay-partition";
/// The header naming the copy's original offset.
pub const HEADER_REPLAY_OFFSET: &str = "factline-replay-offset";

const WAIT: Duration = Duration::from_secs(30);
/// Copies sent and not yet acknowledged, at most.
const IN_FLIGHT: usize = 5_000;

/// Where a replay's target partitions ended when it started.
const TABLE: &str = "CREATE TABLE IF NOT EXISTS factline_replays (
    replay_id text NOT NULL,
    target_topic text NOT NULL,
    target_partition integer NOT NULL,
    start_offset bigint NOT NULL,
    source_topic text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replay_id, target_topic, target_partition)
)";

/// The options of `replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The topic whose archived records are replayed (its full name)
    #[arg(long, required_unless_present = "into_rebuild")]
    pub topic: Option<String>,
    /// Instead of a topic, the feed of a rebuild of this projector: what a new version of it
    /// reads from the archive (below each partition's log start) and from Kafka, per topic and
    /// partition, and any range neither holds (see `rebuild_feed`)
    #[arg(long, conflicts_with_all = ["topic", "to_topic", "replay_id", "rate", "limit"])]
    pub into_rebuild: Option<String>,
    /// Only these partitions (repeatable)
    #[arg(long = "partition")]
    pub partitions: Vec<i32>,
    /// Only records at or after this time (RFC 3339)
    #[arg(long)]
    pub from: Option<DateTime<Utc>>,
    /// Only records before this time (RFC 3339)
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Only records with this key
    #[arg(long)]
    pub key: Option<String>,
    /// Only records of this event type (the `event_type` header)
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// The topic to send to (default: the topic itself); it needs at least as many partitions
    #[arg(long)]
    pub to_topic: Option<String>,
    /// The replay's id: give the id of an interrupted replay to resume it
    #[arg(long)]
    pub replay_id: Option<String>,
    /// Send, instead of counting (a dry run is the default)
    #[arg(long)]
    pub yes: bool,
    /// Records per second at most
    #[arg(long)]
    pub rate: Option<u32>,
    /// Stop after sending this many records
    #[arg(long)]
    pub limit: Option<u64>,
    /// A restore (see [`RestoreOptions`]): every record, no replay headers.
    #[arg(skip)]
    pub restore: bool,
}

/// The options of `restore`: a topic's whole archived history into a topic, for disaster
/// recovery.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreOptions {
    /// The archived topic (its full name)
    #[arg(long)]
    pub topic: String,
    /// The topic to restore into: empty when the restore starts, with at least as many
    /// partitions
    #[arg(long)]
    pub to_topic: String,
    /// Restore, instead of counting (a dry run is the default)
    #[arg(long)]
    pub yes: bool,
    /// Records per second at most
    #[arg(long)]
    pub rate: Option<u32>,
    /// Stop after this many records (run again to continue)
    #[arg(long)]
    pub limit: Option<u64>,
}

impl RestoreOptions {
    /// The replay that restores: every record, byte-identical, no replay headers, resumed by
    /// what the target holds.
    pub fn to_replay(&self) -> Options {
        Options {
            topic: Some(self.topic.clone()),
            into_rebuild: None,
            partitions: Vec::new(),
            from: None,
            until: None,
            key: None,
            event_type: None,
            to_topic: Some(self.to_topic.clone()),
            replay_id: Some(format!("restore:{}:{}", self.topic, self.to_topic)),
            yes: self.yes,
            rate: self.rate,
            limit: self.limit,
            restore: true,
        }
    }
}

/// One partition's share of a replay: the archive objects holding its selected records, what
/// an earlier run sent already, and how many records this run sends.
struct PartitionPlan {
    partition: i32,
    /// The objects to read, in offset order.
    objects: Vec<ManifestEntry>,
    /// The last source offset sent already (-1: none).
    after: i64,
    /// The last archived offset.
    last: i64,
    /// Selected records the target holds already (a restore): skipped.
    skip: u64,
    /// Selected records to send.
    records: u64,
}

impl PartitionPlan {
    /// The selected records of one object, in offset order.
    async fn selected(
        &self,
        bucket: &Bucket,
        entry: &ManifestEntry,
        options: &Options,
    ) -> Result<Vec<ArchivedRecord>, CliError> {
        let mut records = records_of(bucket, entry, self.after + 1, self.last)
            .await
            .map_err(|e: ReadError| archive_error(e))?;
        records.retain(|r| options.selects(r));
        Ok(records)
    }

    /// Counts the records to send: from the manifest for objects a selection takes whole,
    /// by reading the others.
    async fn count(&mut self, bucket: &Bucket, options: &Options) -> Result<(), CliError> {
        let mut selected = 0u64;
        for entry in &self.objects {
            let whole = !options.filters_records() && entry.meta.first_offset > self.after;
            selected += if whole {
                entry.meta.records.max(0) as u64
            } else {
                self.selected(bucket, entry, options).await?.len() as u64
            };
        }
        self.records = selected.saturating_sub(self.skip);
        Ok(())
    }
}

impl Options {
    /// Whether the selection looks into records (a time range, a key, an event type), rather
    /// than taking every record of the selected partitions.
    fn filters_records(&self) -> bool {
        self.from.is_some()
            || self.until.is_some()
            || self.key.is_some()
            || self.event_type.is_some()
    }

    /// Whether an object may hold a record of the selected time range (records without a
    /// timestamp are never in one).
    fn may_select(&self, entry: &ManifestEntry) -> bool {
        if self.from.is_none() && self.until.is_none() {
            return true;
        }
        let (Some(first), Some(last)) = (entry.meta.first_time_ms, entry.meta.last_time_ms) else {
            return false;
        };
        self.from.is_none_or(|from| last >= from.timestamp_millis())
            && self
                .until
                .is_none_or(|until| first < until.timestamp_millis())
    }

    fn selects(&self, record: &ArchivedRecord) -> bool {
        let at = record
            .timestamp_ms
            .and_then(DateTime::from_timestamp_millis);
        self.from.is_none_or(|from| at.is_some_and(|at| at >= from))
            && self
                .until
                .is_none_or(|until| at.is_some_and(|at| at < until))
            && self
                .key
                .as_ref()
                .is_none_or(|key| record.key.as_deref() == Some(key.as_bytes()))
            && self.event_type.as_ref().is_none_or(|wanted| {
                record
                    .headers
                    .iter()
                    .any(|(k, v)| k == "event_type" && v.as_deref() == Some(wanted.as_bytes()))
            })
    }
}

pub(crate) fn kafka_config(settings: &Settings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.kafka_brokers);
    for (key, value) in &settings.kafka_properties {
        config.set(key, value);
    }
    config
}

pub(crate) fn archive_error(e: impl std::fmt::Display) -> CliError {
    CliError::Unreachable {
        service: "the event archive (ARCHIVE_S3_*)".into(),
        message: e.to_string(),
    }
}

/// Runs `replay`; returns the exit code.
pub async fn run(settings: &Settings, options: &Options, format: Format) -> Result<u8, CliError> {
    if let Some(projector) = &options.into_rebuild {
        return crate::rebuild_feed::run(settings, projector, options.yes, format).await;
    }
    let Some(source) = options.topic.as_deref() else {
        return Err(CliError::Config(
            "replay needs --topic (or --into-rebuild NAME)".into(),
        ));
    };
    let archive = ArchiveConfig::from_env(&Env::from_process())
        .map_err(|e| CliError::Config(format!("the event archive: {e}")))?;
    let bucket = Bucket::open(&archive.bucket).map_err(archive_error)?;
    let client = crate::database::connect(&settings.database_url).await?;
    let target = options
        .to_topic
        .clone()
        .unwrap_or_else(|| source.to_owned());
    let replay_id = options
        .replay_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    // what is archived, per partition
    let rows = client
        .query(
            "SELECT partition, max(last_offset) FROM factline_archive_objects \
             WHERE topic = $1 GROUP BY partition ORDER BY partition",
            &[&source],
        )
        .await
        .map_err(CliError::postgres)?;
    let archived: Vec<(i32, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(p, _)| options.partitions.is_empty() || options.partitions.contains(p))
        .collect();
    if archived.is_empty() {
        return Err(CliError::NotFound(format!(
            "archived records of topic {} (selected partitions)",
            source
        )));
    }

    // where an earlier run of this replay got to: the last source offset sent per partition
    // (a replay), or how many records the target holds since the restore began (a restore)
    let done = if options.restore {
        HashMap::new()
    } else if options.yes || options.replay_id.is_some() {
        sent_already(settings, &**client, &replay_id, &target, source).await?
    } else {
        HashMap::new()
    };
    let restored = if options.restore {
        restored_already(
            settings,
            &**client,
            &replay_id,
            &target,
            archived.iter().map(|a| a.0),
        )
        .await?
    } else {
        HashMap::new()
    };

    // the plan: per partition, the objects holding selected records not sent yet, counted
    let mut plan: Vec<PartitionPlan> = Vec::new();
    let mut holes = Vec::new();
    for (partition, last) in &archived {
        let coverage = Manifest::coverage(&**client, source, *partition, 0, *last)
            .await
            .map_err(archive_error)?;
        holes.extend(coverage.missing.iter().map(|(a, b)| (*partition, *a, *b)));
        let after = done.get(partition).copied().unwrap_or(-1);
        let mut share = PartitionPlan {
            partition: *partition,
            objects: coverage
                .objects
                .into_iter()
                .filter(|entry| entry.meta.last_offset > after && options.may_select(entry))
                .collect(),
            after,
            last: *last,
            skip: restored.get(partition).copied().unwrap_or(0).max(0) as u64,
            records: 0,
        };
        share.count(&bucket, options).await?;
        plan.push(share);
    }
    let total: u64 = plan.iter().map(|p| p.records).sum();
    let to_send = options.limit.map_or(total, |limit| limit.min(total));

    if !options.yes {
        let per_partition: BTreeMap<String, u64> = plan
            .iter()
            .map(|p| (p.partition.to_string(), p.records))
            .collect();
        match format {
            Format::Json => output::print_json(&json!({
                "dry_run": true, "replay_id": replay_id, "topic": source,
                "to_topic": target, "records": to_send, "per_partition": per_partition,
                "already_sent": done, "archive_holes": holes,
            })),
            Format::Table => {
                println!(
                    "dry run: replay {replay_id} would send {to_send} records of {} to {target}",
                    source
                );
                for (partition, count) in &per_partition {
                    println!("  partition {partition}: {count}");
                }
                for (partition, a, b) in &holes {
                    println!("  note: partition {partition} offsets {a}..={b} are not archived");
                }
                println!("run again with --yes to send (and --replay-id {replay_id} to resume)");
            }
        }
        return Ok(EXIT_OK);
    }

    // where the target partitions end now, recorded once: the start of this replay's copies
    record_start(
        settings,
        &**client,
        &replay_id,
        &target,
        source,
        plan.iter().map(|p| &p.partition),
    )
    .await?;
    // Up to IN_FLIGHT copies wait for their acknowledgement at once. With the gapless
    // guarantee a failure that could leave a gap in a partition stops the producer, so what a
    // target partition holds is always a prefix of what was sent to it, which is what resuming
    // reads back.
    let mut config = kafka_config(settings);
    if !settings.kafka_properties.contains_key("compression.type") {
        // as the write side: the copies are the same records, and compressed batches cost the
        // broker less (the records themselves stay byte-identical)
        config.set("compression.type", "lz4");
    }
    let producer: FutureProducer = config
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .map_err(|e| CliError::kafka("producer", e))?;
    let mut progress = Progress::new(to_send, "records", format);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut in_flight: VecDeque<(DeliveryFuture, i32, i64)> = VecDeque::new();
    'partitions: for share in &plan {
        let mut skip = share.skip;
        for entry in &share.objects {
            for record in share.selected(&bucket, entry, options).await? {
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if sent >= to_send {
                    break 'partitions;
                }
                if let Some(rate) = options.rate.filter(|r| *r > 0) {
                    let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                let marked = (!options.restore).then_some(replay_id.as_str());
                let delivery =
                    enqueue(&producer, &target, share.partition, &record, marked).await?;
                in_flight.push_back((delivery, record.partition, record.offset));
                sent += 1;
                if in_flight.len() >= IN_FLIGHT {
                    if let Some(oldest) = in_flight.pop_front() {
                        acknowledged(source, oldest).await?;
                        progress.inc();
                    }
                }
            }
        }
    }
    while let Some(oldest) = in_flight.pop_front() {
        acknowledged(source, oldest).await?;
        progress.inc();
    }
    progress.finish();
    let complete = sent == total;
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": false, "replay_id": replay_id, "topic": source,
            "to_topic": target, "sent": sent, "complete": complete,
        })),
        Format::Table => {
            println!(
                "replay {replay_id}: sent {sent} records of {} to {target}",
                source
            );
            if !complete {
                println!(
                    "stopped at the limit: {} left; resume with --replay-id {replay_id} --yes",
                    total - sent
                );
            }
        }
    }
    Ok(EXIT_OK)
}

/// Hands one copy to the producer (waiting while its queue is full); the future resolves with
/// the broker's acknowledgement.
async fn enqueue(
    producer: &FutureProducer,
    target: &str,
    partition: i32,
    record: &ArchivedRecord,
    replay_id: Option<&str>,
) -> Result<DeliveryFuture, CliError> {
    let (partition_text, offset_text) = (record.partition.to_string(), record.offset.to_string());
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 4);
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let marks = replay_id.map(|replay_id| {
        [
            (HEADER_REPLAY_ID, replay_id),
            (HEADER_REPLAY_TOPIC, record.topic.as_str()),
            (HEADER_REPLAY_PARTITION, partition_text.as_str()),
            (HEADER_REPLAY_OFFSET, offset_text.as_str()),
        ]
    });
    for (key, value) in marks.into_iter().flatten() {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(target)
        .partition(partition)
        .headers(headers);
    if let Some(key) = record.key.as_deref() {
        out = out.key(key);
    }
    if let Some(value) = record.value.as_deref() {
        out = out.payload(value);
    }
    if let Some(timestamp) = record.timestamp_ms {
        out = out.timestamp(timestamp);
    }
    loop {
        match producer.send_result(out) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                out = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err((e, _)) => {
                return Err(CliError::kafka(
                    &format!(
                        "sending {}/{}@{}",
                        record.topic, record.partition, record.offset
                    ),
                    e,
                ))
            }
        }
    }
}

/// Waits for the broker's acknowledgement of the copy of `source`'s record at
/// (`partition`, `offset`).
async fn acknowledged(
    source: &str,
    (delivery, partition, offset): (DeliveryFuture, i32, i64),
) -> Result<(), CliError> {
    let what = || format!("sending {source}/{partition}@{offset}");
    match tokio::time::timeout(WAIT, delivery).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err((e, _)))) => Err(CliError::kafka(&what(), e)),
        Ok(Err(_)) => Err(CliError::kafka(&what(), "the producer went away")),
        Err(_) => Err(CliError::Timeout(format!(
            "{}: no acknowledgement within {} s",
            what(),
            WAIT.as_secs()
        ))),
    }
}

/// Records where the target partitions end, the first time this replay sends.
async fn record_start(
    settings: &Settings,
    client: &impl GenericClient,
    replay_id: &str,
    target: &str,
    source: &str,
    partitions: impl Iterator<Item = &i32>,
) -> Result<(), CliError> {
    client
        .batch_execute(TABLE)
        .await
        .map_err(CliError::postgres)?;
    let consumer: BaseConsumer = kafka_config(settings)
        .create()
        .map_err(|e| CliError::kafka("consumer", e))?;
    for partition in partitions {
        let (_, high) = consumer
            .fetch_watermarks(target, *partition, WAIT)
            .map_err(|e| CliError::kafka(&format!("the end of {target}/{partition}"), e))?;
        client
            .execute(
                "INSERT INTO factline_replays (replay_id, target_topic, target_partition, \
                 start_offset, source_topic) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[&replay_id, &target, partition, &high, &source],
            )
            .await
            .map_err(CliError::postgres)?;
    }
    Ok(())
}

/// Where each target partition ended when the replay `replay_id` first sent to it.
async fn starts(
    client: &impl GenericClient,
    replay_id: &str,
    target: &str,
) -> Result<HashMap<i32, i64>, CliError> {
    client
        .batch_execute(TABLE)
        .await
        .map_err(CliError::postgres)?;
    let rows = client
        .query(
            "SELECT target_partition, start_offset FROM factline_replays \
             WHERE replay_id = $1 AND target_topic = $2",
            &[&replay_id, &target],
        )
        .await
        .map_err(CliError::postgres)?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// How many records a restore already wrote, per partition: what the target holds beyond where
/// it ended when the restore began. A target that was not empty when the restore began is
/// refused (a restore recreates a topic; it does not add to one).
async fn restored_already(
    settings: &Settings,
    client: &impl GenericClient,
    restore_id: &str,
    target: &str,
    partitions: impl Iterator<Item = i32>,
) -> Result<HashMap<i32, i64>, CliError> {
    let started = starts(client, restore_id, target).await?;
    let consumer: BaseConsumer = kafka_config(settings)
        .create()
        .map_err(|e| CliError::kafka("consumer", e))?;
    let mut done = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(target, partition, WAIT)
            .map_err(|e| CliError::kafka(&format!("the end of {target}/{partition}"), e))?;
        match started.get(&partition) {
            Some(start) => {
                done.insert(partition, high - start);
            }
            None if high > low => {
                return Err(CliError::Refused {
                    service: "restore".into(),
                    status: "target not empty".into(),
                    message: format!(
                        "{target}/{partition} already holds records (offsets {low}..{high}); \
                         restore into an empty topic"
                    ),
                })
            }
            None => {}
        }
    }
    Ok(done)
}

/// The last source offset this replay already sent, per source partition: read from the
/// target partitions, from where the replay started, in the copies carrying its id.
async fn sent_already(
    settings: &Settings,
    client: &impl GenericClient,
    replay_id: &str,
    target: &str,
    source: &str,
) -> Result<HashMap<i32, i64>, CliError> {
    let mut done = HashMap::new();
    for (partition, start) in starts(client, replay_id, target).await? {
        let consumer: BaseConsumer = kafka_config(settings)
            .set("group.id", "factline-cli-replay")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .map_err(|e| CliError::kafka("consumer", e))?;
        let (_, high) = consumer
            .fetch_watermarks(target, partition, WAIT)
            .map_err(|e| CliError::kafka(&format!("the end of {target}/{partition}"), e))?;
        if high <= start {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(target, partition, Offset::Offset(start))
            .map_err(|e| CliError::kafka("assign", e))?;
        consumer
            .assign(&assignment)
            .map_err(|e| CliError::kafka("assign", e))?;
        let deadline = Instant::now() + WAIT;
        let mut next = start;
        while next < high {
            if Instant::now() > deadline {
                return Err(CliError::Timeout(format!(
                    "reading what replay {replay_id} sent to {target}/{partition}"
                )));
            }
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let Ok(message) = message else {
                continue; // end of partition reached early, or a transient error: poll on
            };
            next = message.offset() + 1;
            let header = |name: &str| {
                message.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            if header(HEADER_REPLAY_ID).as_deref() != Some(replay_id)
                || header(HEADER_REPLAY_TOPIC).as_deref() != Some(source)
            {
                continue;
            }
            if let (Some(p), Some(o)) = (
                header(HEADER_REPLAY_PARTITION).and_then(|p| p.parse::<i32>().ok()),
                header(HEADER_REPLAY_OFFSET).and_then(|o| o.parse::<i64>().ok()),
            ) {
                let entry = done.entry(p).or_insert(o);
                *entry = (*entry).max(o);
            }
        }
    }
    Ok(done)
}
