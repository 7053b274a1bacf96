//! The archive suites' shared checks: a partition read back from the log record by record, the
//! ends of a fixture's topics, the assertion that the archive holds exactly the log (every
//! record once, byte-identical, the bucket holding exactly the manifest's objects), a bucket
//! prefix of the test's own, and Kafka's retention made by hand (`DeleteRecords`).

use std::collections::HashMap;
use std::time::Duration;

use factline_archive::{read_range, ArchivedRecord, Bucket, BucketConfig};
use factline_testkit::stack::{ARCHIVE_S3_BUCKET, ARCHIVE_S3_ENDPOINT};
use factline_testkit::{connect, env, short_id};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use factline_projectors::archive::{ArchiveConfig, ArchiveSink};

use super::{Fixture, Running};

/// The logical topics the archiver of a fixture archives.
pub const TOPICS: [&str; 4] = ["orders", "orders.dlq", "customers", "customers.dlq"];

/// The local stack's bucket under a prefix of the test's own.
pub fn test_bucket() -> BucketConfig {
    let mut config = BucketConfig::local(&env(ARCHIVE_S3_ENDPOINT), &env(ARCHIVE_S3_BUCKET));
    config.prefix = format!("test-{}/", short_id(10));
    config
}

/// Every record of `topic`'s `partition` below `end`, as the log holds it.
pub fn read_log(brokers: &str, topic: &str, partition: i32, end: i64) -> Vec<ArchivedRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("archive-check-{}", short_id(8)))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while records.len() < end as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}/{partition}: read {} of {end}",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        records.push(ArchivedRecord {
            topic: topic.to_owned(),
            partition,
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    records
}

/// The ends of every partition of the test's topics (0 for partitions never written).
pub fn ends(fixture: &Fixture, partitions: i32) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for logical in TOPICS {
        let topic = fixture.topic(logical);
        let count = if logical.ends_with(".dlq") {
            1
        } else {
            partitions
        };
        for partition in 0..count {
            let end = fixture
                .ends
                .get(&(topic.clone(), partition))
                .copied()
                .unwrap_or(0);
            ends.insert((topic.clone(), partition), end);
        }
    }
    ends
}

/// The partitions that hold records (an empty partition never gets a position).
pub fn written(ends: &HashMap<(String, i32), i64>) -> HashMap<(String, i32), i64> {
    ends.iter()
        .filter(|(_, end)| **end > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

pub async fn assert_archive_equals_log(
    fixture: &Fixture,
    url: &str,
    bucket: &Bucket,
    ends: &HashMap<(String, i32), i64>,
) {
    let client = connect(url).await;
    let mut total = 0;
    for ((topic, partition), end) in ends {
        if *end == 0 {
            continue;
        }
        let log = read_log(&fixture.brokers, topic, *partition, *end);
        let archived = read_range(&client, bucket, topic, *partition, 0, end - 1)
            .await
            .unwrap_or_else(|e| panic!("{topic}/{partition}: {e}"));
        assert_eq!(archived, log, "{topic}/{partition}");
        total += archived.len();
        // the bucket holds exactly the manifest's objects: no orphan, no second copy
        let listed = bucket.list_partition(topic, *partition).await.unwrap();
        let recorded: Vec<String> = client
            .query(
                "SELECT object_key FROM factline_archive_objects \
                 WHERE topic = $1 AND partition = $2 ORDER BY first_offset",
                &[topic, partition],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(listed, recorded, "{topic}/{partition}");
    }
    assert_eq!(total as i64, ends.values().sum::<i64>());
}

/// Deletes the records below `before` of every partition of `logical` (Kafka's retention).
pub async fn delete_below(fixture: &Fixture, logical: &str, partitions: i32, before: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &fixture.brokers)
        .create()
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    for partition in 0..partitions {
        offsets
            .add_partition_offset(&fixture.topic(logical), partition, Offset::Offset(before))
            .unwrap();
    }
    admin
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .unwrap();
}

/// The archiver of the fixture's `orders` and `customers` (and their dead-letter topics),
/// running in this process on the database at `url`.
pub fn start_archiver(fixture: &Fixture, url: &str, archive: &ArchiveConfig) -> Running {
    let topics: Vec<String> = ["orders", "customers"].map(String::from).to_vec();
    let sink = ArchiveSink::new(&topics, archive).unwrap();
    super::start_sink(fixture.config(url), sink)
}
