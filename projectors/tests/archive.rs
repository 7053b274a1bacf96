//! The event archive against the real servers (broker, PostgreSQL, the S3 object store): every
//! record of every topic and dead-letter topic is in the archive exactly once, byte-identical
//! to the log (compared record by record), including records no projection could decode; an
//! object a crashed run wrote but never recorded is adopted, not duplicated; a restarted
//! archiver continues the chain of objects without a gap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::dataset::shop;
use common::{fresh_schema, wait_caught_up, Fixture};
use factline_archive::{
    naming, read_range, ArchiveObject, ArchivedRecord, Bucket, BucketConfig, CutRules, Manifest,
};
use factline_projectors::archive::{ArchiveConfig, ArchiveSink, NAME, VERSION};
use factline_testkit::stack::{ARCHIVE_S3_BUCKET, ARCHIVE_S3_ENDPOINT};
use factline_testkit::{connect, env, short_id};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TOPICS: [&str; 4] = ["orders", "orders.dlq", "customers", "customers.dlq"];

/// Every record of `topic`'s `partition` below `end`, as the log holds it.
fn read_log(brokers: &str, topic: &str, partition: i32, end: i64) -> Vec<ArchivedRecord> {
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
fn ends(fixture: &Fixture, partitions: i32) -> HashMap<(String, i32), i64> {
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
fn written(ends: &HashMap<(String, i32), i64>) -> HashMap<(String, i32), i64> {
    ends.iter()
        .filter(|(_, end)| **end > 0)
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

async fn assert_archive_equals_log(
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

fn start(fixture: &Fixture, url: &str, archive: &ArchiveConfig) -> common::Running {
    let topics: Vec<String> = ["orders", "customers"].map(String::from).to_vec();
    let sink = ArchiveSink::new(&topics, archive).unwrap();
    common::start_sink(fixture.config(url), sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_is_archived_once_byte_identical_across_a_crash_and_a_restart() {
    let mut fixture = Fixture::new(2).await;
    fixture.produce_all(&shop(3, 8)).await;
    // records no projection can read, and a dead letter, are archived like any other
    fixture
        .produce_raw(
            "orders",
            "o-garbage",
            b"not avro",
            &[("event_type", "OrderPlaced".into())],
        )
        .await;
    fixture
        .produce_raw(
            "orders.dlq",
            "o-1",
            b"\0\0\0\0\x01x",
            &[("factline-error", "test".into())],
        )
        .await;

    let (_, url) = fresh_schema().await;
    let mut bucket_config = BucketConfig::local(&env(ARCHIVE_S3_ENDPOINT), &env(ARCHIVE_S3_BUCKET));
    bucket_config.prefix = format!("test-{}/", short_id(10));
    let archive = ArchiveConfig {
        bucket: bucket_config.clone(),
        rules: CutRules {
            max_records: 4,
            max_bytes: 1 << 20,
        },
    };
    let bucket = Bucket::open(&bucket_config).unwrap();

    // a run that crashed after writing its first object of orders/0 and before recording it:
    // a cut the next run would not make (2 records, where the next run cuts 4)
    let orders = fixture.topic("orders");
    let first = read_log(&fixture.brokers, &orders, 0, 2);
    let left_behind = ArchiveObject::encode(0, &first).unwrap();
    bucket
        .put_if_absent(
            &naming::object_key(bucket.prefix(), &orders, 0, 0),
            left_behind.bytes,
        )
        .await
        .unwrap();

    let archiver = start(&fixture, &url, &archive);
    let ends_now = ends(&fixture, 2);
    wait_caught_up(&url, NAME, VERSION, &written(&ends_now)).await;
    archiver.stop().await;
    assert_archive_equals_log(&fixture, &url, &bucket, &ends_now).await;
    let client = connect(&url).await;
    let adopted = Manifest::coverage(&client, &orders, 0, 0, 1).await.unwrap();
    assert_eq!(
        adopted.objects[0].meta.last_offset, 1,
        "the crashed run's object was adopted"
    );

    // more traffic, and the archiver restarted: the chain continues where it ended
    fixture.produce_all(&shop(2, 5)).await;
    let archiver = start(&fixture, &url, &archive);
    let ends_later = ends(&fixture, 2);
    wait_caught_up(&url, NAME, VERSION, &written(&ends_later)).await;
    archiver.stop().await;
    assert_archive_equals_log(&fixture, &url, &bucket, &ends_later).await;
}
