//! The event archive against the real servers (broker, PostgreSQL, the S3 object store): every
//! record of every topic and dead-letter topic is in the archive exactly once, byte-identical
//! to the log (compared record by record), including records no projection could decode; an
//! object a crashed run wrote but never recorded is adopted, not duplicated; a restarted
//! archiver continues the chain of objects without a gap; an object of another log is never
//! adopted. The shipped binary killed with SIGKILL: `archive_kill.rs`; rebuilds past
//! retention: `archive_retention.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use common::archive::{
    assert_archive_equals_log, ends, read_log, start_archiver, test_bucket, written,
};
use common::dataset::shop;
use common::{fresh_schema, wait_caught_up, Fixture};
use factline_archive::{naming, ArchiveObject, ArchivedRecord, Bucket, CutRules, Manifest};
use factline_projectors::archive::{ArchiveConfig, ArchiveSink, NAME, VERSION};
use factline_testkit::{connect, short_id};

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
    let bucket_config = test_bucket();
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

    let archiver = start_archiver(&fixture, &url, &archive);
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
    let archiver = start_archiver(&fixture, &url, &archive);
    let ends_later = ends(&fixture, 2);
    wait_caught_up(&url, NAME, VERSION, &written(&ends_later)).await;
    archiver.stop().await;
    assert_archive_equals_log(&fixture, &url, &bucket, &ends_later).await;
}

/// The record at `offset` of `orders/0` as the test writes it, with `value`.
fn orders_record(
    topic: &str,
    offset: i64,
    value: &[u8],
) -> factline_projectors::runtime::record::Record {
    factline_projectors::runtime::record::Record {
        origin: factline_projectors::Origin {
            topic: topic.into(),
            partition: 0,
            offset,
        },
        key: Some(b"o-1".to_vec()),
        payload: Some(value.to_vec()),
        headers: Default::default(),
        timestamp_ms: Some(1_700_000_000_000),
    }
}

#[tokio::test]
async fn an_object_of_another_log_at_the_same_key_is_never_adopted() {
    let (_, url) = fresh_schema().await;
    let mut client = connect(&url).await;
    Manifest::migrate(&client).await.unwrap();
    let bucket_config = test_bucket();
    let bucket = Bucket::open(&bucket_config).unwrap();
    let topic = format!("t{}_orders", short_id(8));
    // another cluster's log, archived under the same bucket and prefix
    let theirs = ArchivedRecord {
        topic: topic.clone(),
        partition: 0,
        offset: 0,
        timestamp_ms: Some(1_700_000_000_000),
        key: Some(b"o-1".to_vec()),
        value: Some(b"their value".to_vec()),
        headers: Vec::new(),
    };
    let object = ArchiveObject::encode(0, std::slice::from_ref(&theirs)).unwrap();
    let key = naming::object_key(bucket.prefix(), &topic, 0, 0);
    bucket.put_if_absent(&key, object.bytes).await.unwrap();

    let sink = ArchiveSink::new(
        &["orders".to_owned()],
        &ArchiveConfig {
            bucket: bucket_config,
            rules: CutRules::default(),
        },
    )
    .unwrap();
    let ours = [
        orders_record(&topic, 0, b"our value"),
        orders_record(&topic, 1, b"next"),
    ];
    let ends = HashMap::new();
    let batch = factline_projectors::Batch::new(Vec::new(), ours.iter().collect(), &ends);
    let mut tx = client.transaction().await.unwrap();
    let refused = factline_projectors::Sink::apply(&sink, &mut tx, &batch).await;
    match refused {
        Err(error @ factline_projectors::archive::ArchiveSinkError::Foreign { .. }) => {
            assert!(error.to_string().contains(&key), "{error}")
        }
        other => panic!("expected a foreign object to be refused, got {other:?}"),
    }
    drop(tx);
    let recorded: i64 = client
        .query_one("SELECT count(*) FROM factline_archive_objects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0, "nothing of the other log is recorded");
}
