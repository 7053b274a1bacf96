//! The archive's bucket, manifest and reader against the real servers of the local stack: SeaweedFS's
//! S3 gateway (`ARCHIVE_S3_ENDPOINT`, `ARCHIVE_S3_BUCKET`) and PostgreSQL (`DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use factline_archive::manifest::{ManifestEntry, MIGRATION};
use factline_archive::{
    cut_len, naming, read_range, ArchiveObject, ArchivedRecord, Bucket, BucketConfig, CutRules,
    Manifest, ReadError, Stored,
};
use factline_testkit::stack::{ARCHIVE_S3_BUCKET, ARCHIVE_S3_ENDPOINT};
use factline_testkit::{env, fresh_schema, short_id};

fn bucket(prefix: &str) -> Bucket {
    let mut config = BucketConfig::local(&env(ARCHIVE_S3_ENDPOINT), &env(ARCHIVE_S3_BUCKET));
    config.prefix = prefix.to_owned();
    Bucket::open(&config).unwrap()
}

fn records(topic: &str, offsets: &[i64]) -> Vec<ArchivedRecord> {
    offsets
        .iter()
        .map(|&offset| ArchivedRecord {
            topic: topic.into(),
            partition: 0,
            offset,
            timestamp_ms: Some(1_700_000_000_000 + offset),
            key: Some(format!("k-{offset}").into_bytes()),
            value: Some(vec![0, 0, 0, 0, 9, offset as u8]),
            headers: vec![("event-id".into(), Some(vec![offset as u8]))],
        })
        .collect()
}

#[tokio::test]
async fn an_object_is_written_once_and_a_second_writer_gets_the_first_ones_bytes() {
    let prefix = format!("test-{}/", short_id(10));
    let bucket = bucket(&prefix);
    let first = ArchiveObject::encode(0, &records("orders", &[0, 1, 2])).unwrap();
    // a second writer that cut the partition elsewhere (one more record) at the same start
    let second = ArchiveObject::encode(0, &records("orders", &[0, 1, 2, 3])).unwrap();
    let key = naming::object_key(&prefix, "orders", 0, 0);

    assert_eq!(
        bucket
            .put_if_absent(&key, first.bytes.clone())
            .await
            .unwrap(),
        Stored::Created
    );
    let again = bucket
        .put_if_absent(&key, second.bytes.clone())
        .await
        .unwrap();
    assert_eq!(again, Stored::AlreadyThere(first.bytes.clone().into()));
    assert_eq!(
        bucket.get(&key).await.unwrap().as_ref(),
        first.bytes.as_slice()
    );
    let (meta, back) = ArchiveObject::decode(&bucket.get(&key).await.unwrap()).unwrap();
    assert_eq!(meta, first.meta);
    assert_eq!(back, records("orders", &[0, 1, 2]));

    // listing: the partition's objects in offset order, nothing of another partition
    let later = ArchiveObject::encode(3, &records("orders", &[3, 10])).unwrap();
    let later_key = naming::object_key(&prefix, "orders", 0, 3);
    bucket.put_if_absent(&later_key, later.bytes).await.unwrap();
    let mut elsewhere = records("orders", &[0]);
    elsewhere[0].partition = 1;
    let elsewhere = ArchiveObject::encode(0, &elsewhere).unwrap();
    bucket
        .put_if_absent(
            &naming::object_key(&prefix, "orders", 1, 0),
            elsewhere.bytes,
        )
        .await
        .unwrap();
    assert_eq!(
        bucket.list_partition("orders", 0).await.unwrap(),
        vec![key, later_key]
    );
}

#[tokio::test]
async fn the_manifest_records_objects_once_and_names_what_no_object_covers() {
    let (_, url) = fresh_schema().await;
    let client = factline_testkit::connect(&url).await;
    Manifest::migrate(&client).await.unwrap();
    Manifest::migrate(&client).await.unwrap(); // idempotent
    assert!(MIGRATION.contains("IF NOT EXISTS"));

    assert_eq!(
        Manifest::next_offset(&client, "orders", 0).await.unwrap(),
        None
    );
    let a = ArchiveObject::encode(0, &records("orders", &[0, 1, 2])).unwrap();
    let c = ArchiveObject::encode(8, &records("orders", &[9])).unwrap();
    Manifest::record(&client, &a.meta, "k/a").await.unwrap();
    Manifest::record(&client, &a.meta, "k/a").await.unwrap(); // the same object again
    Manifest::record(&client, &c.meta, "k/c").await.unwrap();
    let other = ArchiveObject::encode(0, &records("orders", &[0, 1])).unwrap();
    let refused = Manifest::record(&client, &other.meta, "k/x").await;
    assert!(
        refused.is_err(),
        "another object at the same start is refused"
    );

    assert_eq!(
        Manifest::next_offset(&client, "orders", 0).await.unwrap(),
        Some(10)
    );

    let coverage = Manifest::coverage(&client, "orders", 0, 0, 12)
        .await
        .unwrap();
    assert_eq!(
        coverage.objects,
        vec![
            ManifestEntry {
                meta: a.meta.clone(),
                key: "k/a".into()
            },
            ManifestEntry {
                meta: c.meta.clone(),
                key: "k/c".into()
            },
        ]
    );
    assert_eq!(coverage.missing, vec![(3, 7), (10, 12)]);
    let inside = Manifest::coverage(&client, "orders", 0, 1, 2)
        .await
        .unwrap();
    assert_eq!(inside.objects.len(), 1);
    assert!(inside.missing.is_empty());

    // several objects in one statement: one already there, one new, then one that disagrees
    let d = ArchiveObject::encode(10, &records("orders", &[10, 11])).unwrap();
    let elsewhere = ArchiveObject::encode(0, &records("customers", &[0])).unwrap();
    let batch = [
        (c.meta.clone(), "k/c".to_owned()),
        (d.meta.clone(), "k/d".to_owned()),
        (elsewhere.meta.clone(), "k/e".to_owned()),
    ];
    Manifest::record_all(&client, &batch).await.unwrap();
    let disagreeing = [
        (d.meta.clone(), "k/d".to_owned()),
        (other.meta.clone(), "k/x".to_owned()),
    ];
    assert!(
        Manifest::record_all(&client, &disagreeing).await.is_err(),
        "a batch holding another object at a recorded start is refused"
    );
    let partitions = [
        ("orders".to_owned(), 0),
        ("customers".to_owned(), 0),
        ("orders".to_owned(), 1),
    ];
    let next = Manifest::next_offsets(&client, &partitions).await.unwrap();
    assert_eq!(next.get(&partitions[0]), Some(&12));
    assert_eq!(next.get(&partitions[1]), Some(&1));
    assert_eq!(next.get(&partitions[2]), None, "nothing archived there");
}

#[tokio::test]
async fn a_range_is_read_back_across_objects_and_a_hole_is_named() {
    let prefix = format!("test-{}/", short_id(10));
    let bucket = bucket(&prefix);
    let (_, url) = fresh_schema().await;
    let client = factline_testkit::connect(&url).await;
    Manifest::migrate(&client).await.unwrap();
    let all = records("orders", &(0..10).collect::<Vec<_>>());
    let rules = CutRules {
        max_records: 4,
        max_bytes: 1 << 20,
    };
    let mut start = 0;
    let mut objects = 0;
    while start < all.len() {
        let take = cut_len(&all[start..], rules);
        let object = ArchiveObject::encode(start as i64, &all[start..start + take]).unwrap();
        let key = naming::object_key(&prefix, "orders", 0, start as i64);
        bucket.put_if_absent(&key, object.bytes).await.unwrap();
        Manifest::record(&client, &object.meta, &key).await.unwrap();
        start += take;
        objects += 1;
    }
    assert_eq!(objects, 3);

    let read = read_range(&client, &bucket, "orders", 0, 2, 9)
        .await
        .unwrap();
    assert_eq!(read, all[2..].to_vec());
    match read_range(&client, &bucket, "orders", 0, 5, 14).await {
        Err(ReadError::Missing {
            first: 10,
            last: 14,
            partition: 0,
            ..
        }) => {}
        other => panic!("expected the missing range 10..=14, got {other:?}"),
    }
    // an object changed behind the manifest's back is refused, never read
    let first_key = naming::object_key(&prefix, "orders", 0, 0);
    let (_, url2) = fresh_schema().await;
    let other_client = factline_testkit::connect(&url2).await;
    Manifest::migrate(&other_client).await.unwrap();
    let mut forged = ArchiveObject::encode(0, &all[..4]).unwrap().meta;
    forged.sha256 = "0".repeat(64);
    Manifest::record(&other_client, &forged, &first_key)
        .await
        .unwrap();
    match read_range(&other_client, &bucket, "orders", 0, 0, 3).await {
        Err(ReadError::Corrupt { key, .. }) => assert_eq!(key, first_key),
        other => panic!("expected a corrupt object, got {other:?}"),
    }
}
