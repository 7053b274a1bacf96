//! `factline replay --into-rebuild NAME`: the history a rebuild of projector `NAME` is fed
//! with. A rebuild is a new version of the projector (its `VERSION` bumped, or its declarative
//! configuration changed) starting from offset 0 of every partition of its topics; the
//! projector runtime reads the offsets below each partition's log start from the event archive
//! and hands off to Kafka at the log start (`projectors/src/runtime/history.rs`). This command
//! shows that feed before the new version is deployed, per topic and partition: the offsets and
//! records the archive gives, the ones Kafka gives, and any range neither holds (the rebuild
//! would refuse to start, naming it; this command then exits with the "refused" code).
//!
//! It is a dry run only: the rebuild itself starts when the new version runs, never from here
//! (a projector's version is part of its code or configuration), and `--yes` is refused with
//! that explanation. `factline rebuild watch NAME` follows it once started.

use std::time::Duration;

use factline_archive::manifest::Manifest;
use factline_archive::reader::records_of;
use factline_archive::{ArchiveConfig, Bucket};
use factline_service::env::Env;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

use crate::config::Settings;
use crate::error::{CliError, EXIT_OK};
use crate::output::{self, Format};
use crate::replay::{archive_error, kafka_config};

const WAIT: Duration = Duration::from_secs(30);

/// What one partition feeds a rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFeed {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Kafka's log start: offsets below it come from the archive.
    pub log_start: i64,
    /// Kafka's log end (the next offset).
    pub log_end: i64,
    /// Records the archive gives (offsets `0..log_start`).
    pub archive_records: i64,
    /// Ranges below the log start that the archive does not hold either (inclusive).
    pub missing: Vec<(i64, i64)>,
}

impl PartitionFeed {
    fn to_json(&self) -> Value {
        json!({
            "topic": self.topic, "partition": self.partition,
            "archive_offsets": (self.log_start > 0).then(|| [0, self.log_start - 1]),
            "archive_records": self.archive_records,
            "kafka_offsets": (self.log_end > self.log_start)
                .then(|| [self.log_start, self.log_end - 1]),
            "kafka_records": self.log_end - self.log_start,
            "missing": self.missing,
        })
    }
}

/// The topics of `projector`'s newest version, as its runtime recorded them.
async fn topics(
    client: &impl GenericClient,
    projector: &str,
) -> Result<(i32, Vec<String>), CliError> {
    let row = client
        .query_opt(
            "SELECT version, topics FROM factline_projector_rebuilds \
             WHERE projector = $1 AND topics IS NOT NULL ORDER BY version DESC LIMIT 1",
            &[&projector],
        )
        .await
        .map_err(CliError::postgres)?
        .ok_or_else(|| CliError::NotFound(format!("projector {projector}")))?;
    Ok((row.get(0), row.get(1)))
}

/// Every partition of `topics` with its log start and end.
fn partitions(
    settings: &Settings,
    topics: &[String],
) -> Result<Vec<(String, i32, i64, i64)>, CliError> {
    let consumer: BaseConsumer = kafka_config(settings)
        .create()
        .map_err(|e| CliError::kafka("consumer", e))?;
    let mut all = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), WAIT)
            .map_err(|e| CliError::kafka(&format!("the partitions of {topic}"), e))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), WAIT)
                    .map_err(|e| {
                        CliError::kafka(&format!("the offsets of {topic}/{}", p.id()), e)
                    })?;
                all.push((topic.clone(), p.id(), low, high));
            }
        }
    }
    all.sort();
    Ok(all)
}

/// What the archive gives below `log_start`: its record count and the ranges it lacks.
async fn from_archive(
    client: &impl GenericClient,
    bucket: Option<&Bucket>,
    topic: &str,
    partition: i32,
    log_start: i64,
) -> Result<(i64, Vec<(i64, i64)>), CliError> {
    if log_start == 0 {
        return Ok((0, Vec::new()));
    }
    let Some(bucket) = bucket else {
        return Ok((0, vec![(0, log_start - 1)]));
    };
    let coverage = match Manifest::coverage(client, topic, partition, 0, log_start - 1).await {
        Ok(coverage) => coverage,
        // no manifest in this database: the archiver never ran here
        Err(factline_archive::ArchiveError::Manifest(e))
            if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
        {
            return Ok((0, vec![(0, log_start - 1)]))
        }
        Err(e) => return Err(archive_error(e)),
    };
    let mut records = 0;
    for entry in &coverage.objects {
        records += if entry.meta.last_offset < log_start {
            entry.meta.records
        } else {
            // the object reaching past the log start: count what lies below it
            records_of(bucket, entry, 0, log_start - 1)
                .await
                .map_err(archive_error)?
                .len() as i64
        };
    }
    Ok((records, coverage.missing))
}

/// Runs `replay --into-rebuild PROJECTOR`; returns the exit code.
pub async fn run(
    settings: &Settings,
    projector: &str,
    yes: bool,
    format: Format,
) -> Result<u8, CliError> {
    if yes {
        return Err(CliError::Refused {
            service: "replay --into-rebuild".into(),
            status: "not started from here".into(),
            message: format!(
                "a rebuild of {projector} starts when a new version of it runs (its VERSION \
                 bumped, or its declarative configuration changed) and reads this history from \
                 the archive and Kafka by itself; run without --yes to see what it will read, \
                 and follow it with `factline rebuild watch {projector}`"
            ),
        });
    }
    let client = crate::database::connect(&settings.database_url).await?;
    let (version, topics) = topics(&**client, projector).await?;
    let env = Env::from_process();
    let bucket = match env.get("ARCHIVE_S3_BUCKET") {
        Some(_) => {
            let archive = ArchiveConfig::from_env(&env)
                .map_err(|e| CliError::Config(format!("the event archive: {e}")))?;
            Some(Bucket::open(&archive.bucket).map_err(archive_error)?)
        }
        None => None,
    };
    let settings_clone = settings.clone();
    let listed = tokio::task::spawn_blocking(move || partitions(&settings_clone, &topics))
        .await
        .map_err(|e| CliError::Config(format!("reading the topics failed: {e}")))??;
    let mut feed = Vec::new();
    for (topic, partition, log_start, log_end) in listed {
        let (archive_records, missing) =
            from_archive(&**client, bucket.as_ref(), &topic, partition, log_start).await?;
        feed.push(PartitionFeed {
            topic,
            partition,
            log_start,
            log_end,
            archive_records,
            missing,
        });
    }
    let holes: Vec<String> = feed
        .iter()
        .flat_map(|f| {
            f.missing
                .iter()
                .map(move |(a, b)| format!("{}/{}: offsets {a}..={b}", f.topic, f.partition))
        })
        .collect();
    let (archived, logged): (i64, i64) = feed.iter().fold((0, 0), |(a, k), f| {
        (a + f.archive_records, k + f.log_end - f.log_start)
    });
    match format {
        Format::Json => output::print_json(&json!({
            "dry_run": true, "projector": projector, "newest_version": version,
            "archive_records": archived, "kafka_records": logged,
            "partitions": feed.iter().map(PartitionFeed::to_json).collect::<Vec<_>>(),
            "missing": holes,
        })),
        Format::Table => {
            println!(
                "dry run: a new version of {projector} (newest now: v{version}) would read \
                 {archived} records from the archive and {logged} from Kafka"
            );
            for f in &feed {
                let archive = if f.log_start > 0 {
                    format!(
                        "archive 0..={} ({} records)",
                        f.log_start - 1,
                        f.archive_records
                    )
                } else {
                    "archive -".to_owned()
                };
                println!(
                    "  {}/{}: {archive}, kafka {}..{} ({} records)",
                    f.topic,
                    f.partition,
                    f.log_start,
                    f.log_end,
                    f.log_end - f.log_start
                );
            }
            println!(
                "a rebuild starts when the new version runs; follow it with \
                 `factline rebuild watch {projector}`"
            );
        }
    }
    if holes.is_empty() {
        Ok(EXIT_OK)
    } else {
        Err(CliError::Refused {
            service: "the rebuild".into(),
            status: "history missing".into(),
            message: format!(
                "neither Kafka nor the archive holds {}; the rebuild would stop there",
                holes.join(", ")
            ),
        })
    }
}
