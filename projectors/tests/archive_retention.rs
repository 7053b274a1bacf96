//! Rebuilds past Kafka's retention against the real servers (broker, PostgreSQL, Elasticsearch,
//! the S3 object store): with the records below an offset deleted from Kafka (`DeleteRecords`),
//! `order_summary`, `customer_stats` and `order_search` rebuilt from the archive plus the log
//! equal the read models built from the whole log; with a hole in both the archive and Kafka,
//! the rebuild refuses, naming the topic, partition and missing range.
//!
//! A PostgreSQL projection's tables carry its compiled version (`order_summary_v1`), so its
//! rebuild runs where no version of it exists yet (a fresh schema holding the archive's
//! manifest): to the runtime that is exactly a new version, no positions and empty tables.
//! `order_search` is rebuilt as a true new version (v2 beside the live v1, same schema and
//! index prefix), which swaps the alias when it has caught up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::archive::{delete_below, ends, start_archiver, test_bucket, written};
use common::dataset::shop;
use common::harness::Renamed;
use common::{fresh_schema, search, wait_caught_up, Fixture};
use factline_archive::{CutRules, Manifest};
use factline_projectors::archive::{ArchiveConfig, NAME, VERSION};
use factline_projectors::projections::{
    customer_stats, order_search, order_summary, CustomerStatsProjection, OrderSearchProjection,
    OrderSummaryProjection,
};
use factline_testkit::connect;

const ORDERS: &str = "SELECT * FROM order_summary ORDER BY order_id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_past_retention_reads_the_archive_and_a_hole_is_refused_by_name() {
    let mut fixture = Fixture::new(2).await;
    fixture.produce_all(&shop(4, 12)).await;
    let projection = || OrderSummaryProjection;
    let order_ends = fixture.ends_for(&projection());

    // the reference: order_summary built from the whole log
    let (_, whole) = fresh_schema().await;
    let built = common::start(fixture.config(&whole), projection());
    wait_caught_up(
        &whole,
        order_summary::NAME,
        order_summary::VERSION,
        &order_ends,
    )
    .await;
    built.stop().await;
    let reference = common::dump(&whole, ORDERS).await;
    assert!(!reference.is_empty());

    // the archive of everything, then Kafka's oldest records are deleted
    let (_, url) = fresh_schema().await;
    let bucket_config = test_bucket();
    let archive = ArchiveConfig {
        bucket: bucket_config,
        rules: CutRules::default(),
    };
    let archiver = start_archiver(&fixture, &url, &archive);
    wait_caught_up(&url, NAME, VERSION, &written(&ends(&fixture, 2))).await;
    archiver.stop().await;
    delete_below(&fixture, "orders", 2, 5).await;

    // without the archive's manifest the rebuild refuses, naming what is missing
    let (_, bare) = fresh_schema().await;
    let refused = tokio::time::timeout(
        Duration::from_secs(120),
        factline_projectors::run(fixture.config(&bare), projection(), std::future::pending()),
    )
    .await
    .expect("the projector stops instead of building an incomplete read model")
    .unwrap_err()
    .to_string();
    let orders = fixture.topic("orders");
    assert!(
        refused.contains(&format!("{orders}/0: offsets 0..=4")),
        "{refused}"
    );

    // with it, the rebuild reads offsets 0..=4 from the archive and the rest from Kafka
    let rebuilt = common::start(fixture.config(&url), projection());
    wait_caught_up(
        &url,
        order_summary::NAME,
        order_summary::VERSION,
        &order_ends,
    )
    .await;
    rebuilt.stop().await;
    assert_eq!(common::dump(&url, ORDERS).await, reference);
}

const CUSTOMERS: &str = "SELECT * FROM customer_stats ORDER BY customer_id";
const CUSTOMER_ORDERS: &str = "SELECT * FROM customer_stats_orders_v1 ORDER BY order_id";

/// The produced ends of `logical` topics.
fn ends_of(fixture: &Fixture, logical: &[&str]) -> HashMap<(String, i32), i64> {
    let topics: Vec<String> = logical.iter().map(|t| fixture.topic(t)).collect();
    fixture
        .ends
        .iter()
        .filter(|((t, _), _)| topics.contains(t))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// The documents of an index without the runtime's bookkeeping (which records when and how
/// each document was written, not what it says).
async fn documents(index: &str) -> Vec<(String, serde_json::Value)> {
    search::dump(index, "order_id")
        .await
        .into_iter()
        .map(|(id, mut source)| {
            if let Some(source) = source.as_object_mut() {
                source.remove("factline");
            }
            (id, source)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_stats_and_order_search_rebuilt_past_retention_equal_their_full_log_builds() {
    let mut fixture = Fixture::new(2).await;
    fixture.produce_all(&shop(6, 18)).await;
    let both = ends_of(&fixture, &["orders", "customers"]);

    // the archive of everything, in the database the rebuilds run in
    let (_, url) = fresh_schema().await;
    let archive = ArchiveConfig {
        bucket: test_bucket(),
        rules: CutRules {
            max_records: 4,
            max_bytes: 1 << 20,
        },
    };
    let archiver = start_archiver(&fixture, &url, &archive);
    wait_caught_up(&url, NAME, VERSION, &written(&ends(&fixture, 2))).await;
    archiver.stop().await;

    // the references, built from the whole log: customer_stats in a schema of its own,
    // order_search v1 live in the rebuild's schema and index prefix
    let (_, whole) = fresh_schema().await;
    let built = common::start(fixture.config(&whole), CustomerStatsProjection);
    wait_caught_up(&whole, customer_stats::NAME, customer_stats::VERSION, &both).await;
    built.stop().await;
    let reference_customers = common::dump(&whole, CUSTOMERS).await;
    let reference_orders = common::dump(&whole, CUSTOMER_ORDERS).await;
    assert!(!reference_customers.is_empty() && !reference_orders.is_empty());
    let config = fixture.search_config(&url, "");
    let v1 = common::start_search(config.clone(), OrderSearchProjection::new().unwrap());
    wait_caught_up(&url, order_search::NAME, 1, &both).await;
    v1.stop().await;
    let index = |version: u32| format!("{}order_search_v{version}", fixture.prefix);
    let reference_documents = documents(&index(1)).await;
    assert!(!reference_documents.is_empty());

    // Kafka loses the oldest records of every partition of both topics
    delete_below(&fixture, "orders", 2, 5).await;
    delete_below(&fixture, "customers", 2, 3).await;

    // the rebuilds read the archive below each log start and Kafka after it
    let rebuilt = common::start(fixture.config(&url), CustomerStatsProjection);
    wait_caught_up(&url, customer_stats::NAME, customer_stats::VERSION, &both).await;
    rebuilt.stop().await;
    assert_eq!(common::dump(&url, CUSTOMERS).await, reference_customers);
    assert_eq!(common::dump(&url, CUSTOMER_ORDERS).await, reference_orders);

    let v2 = common::start_search(
        config,
        Renamed::new(order_search::NAME, 2, OrderSearchProjection::new().unwrap()),
    );
    wait_caught_up(&url, order_search::NAME, 2, &both).await;
    let alias = format!("{}order_search", fixture.prefix);
    factline_testkit::eventually(
        "order_search v2 to go live",
        Duration::from_secs(60),
        || {
            let (alias, v2) = (alias.clone(), index(2));
            async move { (search::alias_targets(&alias).await == vec![v2]).then_some(()) }
        },
    )
    .await;
    v2.stop().await;
    assert_eq!(documents(&index(2)).await, reference_documents);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hole_in_both_the_archive_and_kafka_is_refused_naming_the_range() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce_all(&shop(2, 8)).await;
    let (_, url) = fresh_schema().await;
    let archive = ArchiveConfig {
        bucket: test_bucket(),
        rules: CutRules {
            max_records: 3,
            max_bytes: 1 << 20,
        },
    };
    let archiver = start_archiver(&fixture, &url, &archive);
    wait_caught_up(&url, NAME, VERSION, &written(&ends(&fixture, 1))).await;
    archiver.stop().await;
    let orders = fixture.topic("orders");
    assert!(
        fixture.ends[&(orders.clone(), 0)] > 8,
        "the test needs more than 8 orders events"
    );
    // the object holding offsets 3..=5 is lost from the archive, and Kafka deletes 0..=7
    let client = connect(&url).await;
    let coverage = Manifest::coverage(&client, &orders, 0, 3, 5).await.unwrap();
    assert_eq!(
        (
            coverage.objects[0].meta.first_offset,
            coverage.objects[0].meta.last_offset
        ),
        (3, 5)
    );
    client
        .execute(
            "DELETE FROM factline_archive_objects WHERE topic = $1 AND partition = 0 \
             AND first_offset = 3",
            &[&orders],
        )
        .await
        .unwrap();
    delete_below(&fixture, "orders", 1, 8).await;

    let refused = common::run_until_refused(
        fixture.config(&url),
        OrderSummaryProjection,
        "it must stop instead of building an incomplete read model",
    )
    .await
    .to_string();
    assert!(
        refused.contains(&format!("{orders}/0: offsets 0..=7"))
            && refused.contains("offsets 3..=5"),
        "{refused}"
    );
    assert_eq!(
        common::count(&url, "SELECT count(*) FROM order_summary").await,
        0,
        "nothing of a partial history is applied"
    );
}
