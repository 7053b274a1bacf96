//! `factline replay --into-rebuild NAME` against the real stack (broker, PostgreSQL, the S3
//! object store, the archive written by the archiver): after Kafka lost the oldest records of
//! `orders`, the dry run says per partition what a new version of `order_summary` reads from
//! the archive and from Kafka, with the exact counts; a range neither holds is named and exits
//! with the "refused" code; `--yes` is refused with what starts a rebuild.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use factline_archive::CutRules;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::*;

async fn feed(world: &World, prefix: &str, args: &[&str]) -> Run {
    let mut full = vec![
        "--output",
        "json",
        "replay",
        "--into-rebuild",
        "order_summary",
    ];
    full.extend_from_slice(args);
    let mut command = command(world, &full);
    command.env("ARCHIVE_S3_PREFIX", prefix);
    finish(command, &full).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_of_a_rebuild_counts_archive_and_kafka_and_names_a_hole() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for _ in 0..6 {
        let answer = world
            .command("PlaceOrder", order(&unique("o"), "c-1", "tea", 1, 100))
            .await;
        let partition = answer["partition"].as_i64().unwrap() as i32;
        let end = ends.entry(partition).or_insert(0);
        *end = (*end).max(answer["offset"].as_i64().unwrap() + 1);
    }
    caught_up(&world).await;
    let orders = format!("{}orders", world.prefix);

    // the archive of everything, by the archiver
    let prefix = archive::archive_orders(
        &world,
        CutRules {
            max_records: 1,
            max_bytes: 1 << 20,
        },
        6,
    )
    .await;

    // Kafka loses every record of orders, then one more order arrives
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .create()
        .unwrap();
    let mut below = TopicPartitionList::new();
    for (partition, end) in &ends {
        below
            .add_partition_offset(&orders, *partition, Offset::Offset(*end))
            .unwrap();
    }
    admin
        .delete_records(&below, &AdminOptions::new())
        .await
        .unwrap();
    world
        .command("PlaceOrder", order(&unique("o"), "c-1", "tea", 1, 100))
        .await;

    let run = feed(&world, &prefix, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let plan = run.json();
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["archive_records"], 6, "{plan}");
    assert_eq!(plan["kafka_records"], 1, "{plan}");
    for (partition, end) in &ends {
        let row = plan["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["topic"] == orders.as_str() && p["partition"] == *partition)
            .unwrap_or_else(|| panic!("{orders}/{partition} missing: {plan}"))
            .clone();
        assert_eq!(row["archive_offsets"], serde_json::json!([0, end - 1]));
        assert_eq!(row["archive_records"], *end);
    }

    // a hole: the object of orders/P offset 0 lost from the archive as well
    let (partition, _) = ends.iter().next().unwrap();
    let db = factline_testkit::connect(&world.database_url).await;
    db.execute(
        "DELETE FROM factline_archive_objects WHERE topic = $1 AND partition = $2 \
         AND first_offset = 0",
        &[&orders, partition],
    )
    .await
    .unwrap();
    let run = feed(&world, &prefix, &[]).await;
    assert_eq!(run.code, 5, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{orders}/{partition}: offsets 0..=0")),
        "{}",
        run.stderr
    );

    // a rebuild starts when the new version runs, never from here
    let run = feed(&world, &prefix, &["--yes"]).await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(run.stderr.contains("new version"), "{}", run.stderr);
    world.stop().await;
}
