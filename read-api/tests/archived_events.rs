//! The event viewer reaches history that Kafka no longer holds. `/events` is served by the
//! `event_index` projector, which is fed from the log; once the oldest records are gone from
//! Kafka (retention, here `DeleteRecords`), a new version of `event_index` rebuilding from the
//! beginning reads them from the event archive (the runtime's history reader) and hands off to
//! Kafka at the log start, so after its swap `GET /events` still finds every event, the ones
//! only the archive holds included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::*;
use factline_projectors::archive::{ArchiveConfig, ArchiveSink};
use factline_projectors::projections::EventIndexProjection;
use factline_projectors::search::{DocRef, IndexSpec, Join};
use factline_projectors::{Event, ProjectionError, SearchProjection};
use factline_service::env::Env;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

/// `event_index` as a new version: the same projection, another version number, so it fills
/// indices of its own and swaps the alias when it has caught up (what bumping `VERSION` does).
#[derive(Clone)]
struct NewVersion(EventIndexProjection, u32);

impl SearchProjection for NewVersion {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn version(&self) -> u32 {
        self.1
    }
    fn topics(&self) -> Vec<String> {
        self.0.topics()
    }
    fn event_types(&self) -> Vec<String> {
        self.0.event_types()
    }
    fn indices(&self) -> Vec<IndexSpec> {
        self.0.indices()
    }
    fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
        self.0.targets(event)
    }
    fn apply(
        &self,
        doc: &DocRef,
        current: Option<Value>,
        event: &Event,
    ) -> Result<Option<Value>, ProjectionError> {
        self.0.apply(doc, current, event)
    }
    fn deletes(&self) -> bool {
        self.0.deletes()
    }
    fn join(&self) -> Option<Join> {
        self.0.join()
    }
    fn enrich(&self, doc: Value, side: Option<&Value>) -> Value {
        self.0.enrich(doc, side)
    }
}

/// Every event id `/events` lists (one page of at most 100).
async fn listed(world: &World, query: &str) -> BTreeSet<String> {
    let (status, _, body) = world.get(&format!("/events?limit=100{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `projector`'s version `version` stored positions at or past `ends`.
async fn wait_positions(
    url: &str,
    projector: &str,
    version: i32,
    ends: &HashMap<(String, i32), i64>,
) {
    let client = factline_testkit::connect(url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = client
            .query(
                "SELECT topic, partition, next_offset FROM factline_projector_positions \
                 WHERE projector = $1 AND version = $2",
                &[&projector, &version],
            )
            .await
            .unwrap_or_default();
        let stored: HashMap<(String, i32), i64> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let behind: Vec<_> = ends
            .iter()
            .filter(|(tp, end)| stored.get(*tp).is_none_or(|n| n < *end))
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{projector} v{version} did not reach {behind:?}; stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kafka_lost_the_oldest_events_a_new_event_index_version_still_finds_them() {
    let world = World::start(&[Projector::EventIndex], |_| {}).await;
    let archive = ArchiveConfig::from_env(&Env::from_vars([
        ("ARCHIVE_S3_ENDPOINT", env("ARCHIVE_S3_ENDPOINT")),
        ("ARCHIVE_S3_BUCKET", env("ARCHIVE_S3_BUCKET")),
        ("ARCHIVE_S3_PREFIX", format!("test-{}/", unique("a"))),
    ]))
    .unwrap();
    let sink = ArchiveSink::new(&factline_schemas::Catalog::builtin().topics(), &archive).unwrap();
    let config = world.projector_config();
    let archiver = Running::spawn(|stopped| async move {
        let _ = factline_projectors::run_sink(config, sink, async move {
            let _ = stopped.await;
        })
        .await;
    });

    // history: customers and their orders, indexed by v1 and archived
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut old_ids = BTreeSet::new();
    let mut old_order = String::new();
    for c in 0..3 {
        let customer_id = unique("c");
        let mut sent = vec![
            world
                .command("RegisterCustomer", customer(&customer_id, "Ada Lovelace"))
                .await,
        ];
        for _ in 0..2 {
            old_order = unique("o");
            sent.push(
                world
                    .command(
                        "PlaceOrder",
                        order(&old_order, &customer_id, "Earl Grey tea", 1 + c, 450),
                    )
                    .await,
            );
        }
        for answer in sent {
            old_ids.insert(answer["event_id"].as_str().unwrap().to_owned());
            let at = (
                answer["topic"].as_str().unwrap().to_owned(),
                answer["partition"].as_i64().unwrap() as i32,
            );
            let end = ends.entry(at).or_insert(0);
            *end = (*end).max(answer["offset"].as_i64().unwrap() + 1);
        }
    }
    wait_positions(&world.database_url, "event_archive", 1, &ends).await;
    wait_positions(&world.database_url, "event_index", 1, &ends).await;
    assert_eq!(listed(&world, "").await, old_ids);

    // Kafka loses all of it: every record below each partition's end is deleted
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .create()
        .unwrap();
    let mut below = TopicPartitionList::new();
    for ((topic, partition), end) in &ends {
        below
            .add_partition_offset(topic, *partition, Offset::Offset(*end))
            .unwrap();
    }
    for result in admin
        .delete_records(&below, &AdminOptions::new())
        .await
        .unwrap()
        .elements()
    {
        result.error().unwrap();
    }

    // a new event arrives after the deletion: the rebuild must read it from Kafka
    let new_order = unique("o");
    let answer = world
        .command("PlaceOrder", order(&new_order, "c-later", "Sencha", 1, 300))
        .await;
    let new_id = answer["event_id"].as_str().unwrap().to_owned();
    let at = (
        answer["topic"].as_str().unwrap().to_owned(),
        answer["partition"].as_i64().unwrap() as i32,
    );
    let end = ends.entry(at).or_insert(0);
    *end = (*end).max(answer["offset"].as_i64().unwrap() + 1);

    // a new version of event_index rebuilds from the beginning: the archive below the log
    // start, Kafka from there; it goes live once caught up and v1's indices are dropped
    let config = world.projector_config();
    let v2 = Running::spawn(|stopped| async move {
        let _ = factline_projectors::run_search(
            config,
            NewVersion(EventIndexProjection::new().unwrap(), 2),
            async move {
                let _ = stopped.await;
            },
        )
        .await;
    });
    wait_positions(&world.database_url, "event_index", 2, &ends).await;
    let mut all = old_ids.clone();
    all.insert(new_id);
    world
        .eventually_with("/events?limit=100", |status, headers, body| {
            status == 200
                && header(headers, "factline-projection") == "event_index/v2"
                && body["items"].as_array().map_or(0, Vec::len) == all.len()
        })
        .await;
    assert_eq!(listed(&world, "").await, all);
    // an event only the archive holds is found by its key, as any other
    let by_key = listed(&world, &format!("&key={old_order}")).await;
    assert_eq!(by_key.len(), 1, "{by_key:?}");
    assert!(old_ids.is_superset(&by_key));

    v2.stop().await;
    archiver.stop().await;
    world.stop().await;
}
