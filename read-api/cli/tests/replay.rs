//! `factline replay` against the real stack (broker, PostgreSQL, the S3 object store, the
//! event archive written by the archiver): a dry run counts what a real run sends; a replay
//! stopped at a limit and resumed sends every selected record exactly once, byte-identical
//! with the replay's headers added; a restore recreates a topic exactly and refuses a topic that
//! has records; a replay into the origin topic changes no read model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use factline_archive::CutRules;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::*;

type Copy = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// Every record of `topic`, by (partition, offset): key, value, headers.
fn read_topic(topic: &str) -> BTreeMap<(i32, i64), Copy> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .set(
            "group.id",
            format!("replay-check-{}", factline_testkit::short_id(8)),
        )
        .create()
        .unwrap();
    let mut records = BTreeMap::new();
    for partition in 0..3 {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut next = 0;
        while next < high {
            assert!(
                std::time::Instant::now() < deadline,
                "reading {topic}/{partition}"
            );
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            next = message.offset() + 1;
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default();
            records.insert(
                (partition, message.offset()),
                (
                    message.key().map(<[u8]>::to_vec),
                    message.payload().map(<[u8]>::to_vec),
                    headers,
                ),
            );
        }
    }
    records
}

async fn replay(world: &World, prefix: &str, args: &[&str]) -> serde_json::Value {
    replay_run(world, prefix, args).await.json()
}

/// `factline --output json replay ARGS`, which must succeed.
async fn replay_run(world: &World, prefix: &str, args: &[&str]) -> Run {
    let mut full = vec!["--output", "json", "replay"];
    full.extend_from_slice(args);
    let mut command = command(world, &full);
    command.env("ARCHIVE_S3_PREFIX", prefix);
    let run = finish(command, &full).await;
    assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_restore_send_each_record_once_and_change_no_read_model() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    for _ in 0..6 {
        world
            .command("PlaceOrder", order(&unique("o"), "c-1", "tea", 1, 100))
            .await;
    }
    caught_up(&world).await;
    let orders = format!("{}orders", world.prefix);
    let original = read_topic(&orders);
    assert_eq!(original.len(), 6);

    // the archive, written by the archiver
    let prefix = archive::archive_orders(&world, CutRules::default(), 6).await;

    // a dry run counts, sends nothing
    let target = format!("{}orders_replayed", world.prefix);
    let config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
    factline_schemas::topics::create_topics(&config, std::slice::from_ref(&target), 3, 1)
        .await
        .unwrap();
    let dry = replay(
        &world,
        &prefix,
        &["--topic", &orders, "--to-topic", &target],
    )
    .await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["records"], 6);
    assert!(read_topic(&target).is_empty());

    // stopped at a limit, resumed, resumed again: each record sent once
    let id = format!("r-{}", factline_testkit::short_id(8));
    let base = [
        "--topic",
        orders.as_str(),
        "--to-topic",
        target.as_str(),
        "--replay-id",
        id.as_str(),
        "--yes",
    ];
    let mut limited = base.to_vec();
    limited.extend(["--limit", "2"]);
    assert_eq!(replay(&world, &prefix, &limited).await["sent"], 2);
    let resumed = replay_run(&world, &prefix, &base).await;
    assert_eq!(resumed.json()["sent"], 4);
    // with --output json, progress goes to standard error as JSON lines, the last at the end
    let last: serde_json::Value = resumed
        .stderr
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l.get("progress").is_some())
        .unwrap_or_else(|| panic!("no JSON progress line: {}", resumed.stderr));
    assert_eq!(
        (&last["progress"]["done"], &last["progress"]["total"]),
        (&serde_json::json!(4), &serde_json::json!(4))
    );
    assert_eq!(replay(&world, &prefix, &base).await["sent"], 0);
    let copies = read_topic(&target);
    assert_eq!(copies.len(), 6);
    let mut seen = BTreeMap::new();
    for ((partition, _), (key, value, headers)) in &copies {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.clone())
                .map(|v| String::from_utf8(v).unwrap())
        };
        assert_eq!(header("factline-replay-id").as_deref(), Some(id.as_str()));
        assert_eq!(
            header("factline-replay-topic").as_deref(),
            Some(orders.as_str())
        );
        let from: i32 = header("factline-replay-partition")
            .unwrap()
            .parse()
            .unwrap();
        let offset: i64 = header("factline-replay-offset").unwrap().parse().unwrap();
        assert_eq!(from, *partition, "the partition number is kept");
        let (original_key, original_value, original_headers) = &original[&(from, offset)];
        assert_eq!((key, value), (original_key, original_value));
        assert_eq!(&headers[..original_headers.len()], &original_headers[..]);
        assert!(
            seen.insert((from, offset), ()).is_none(),
            "sent twice: {from}/{offset}"
        );
    }

    // a restore into an empty topic recreates every partition as it was, offsets included;
    // stopped at a limit and run again it continues; into a topic with records it is refused
    let restored = format!("{}orders_restored", world.prefix);
    factline_schemas::topics::create_topics(&config, std::slice::from_ref(&restored), 3, 1)
        .await
        .unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec!["--output", "json", "restore", "--topic", orders.as_str()];
        args.extend_from_slice(&["--to-topic", restored.as_str()]);
        args.extend_from_slice(extra);
        let mut command = command(&world, &args);
        command.env("ARCHIVE_S3_PREFIX", &prefix);
        finish(command, &[])
    };
    assert_eq!(restore(&[]).await.json()["records"], 6, "a dry run counts");
    assert_eq!(restore(&["--yes", "--limit", "4"]).await.json()["sent"], 4);
    assert_eq!(restore(&["--yes"]).await.json()["sent"], 2);
    assert_eq!(restore(&["--yes"]).await.json()["sent"], 0);
    assert_eq!(read_topic(&restored), original);
    let refused = finish(
        {
            let mut c = command(
                &world,
                &[
                    "restore",
                    "--topic",
                    &orders,
                    "--to-topic",
                    &target,
                    "--yes",
                ],
            );
            c.env("ARCHIVE_S3_PREFIX", &prefix);
            c
        },
        &[],
    )
    .await;
    assert_eq!(refused.code, 5, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("restore into an empty topic"),
        "{}",
        refused.stderr
    );

    // into the origin topic: the projector skips every copy (same event ids)
    const ORDERS: &str = "SELECT * FROM order_summary ORDER BY order_id";
    let before = factline_testkit::postgres::rows_as_json(&world.database_url, ORDERS).await;
    assert_eq!(before.len(), 6);
    let sent = replay(&world, &prefix, &["--topic", &orders, "--yes"]).await;
    assert_eq!(sent["sent"], 6);
    assert_eq!(read_topic(&orders).len(), 12);
    let db = factline_testkit::connect(&world.database_url).await;
    factline_testkit::eventually("order_summary read the copies", Duration::from_secs(120), || {
        let (db, orders) = (&db, &orders);
        async move {
            let next: i64 = db
                .query_one(
                    "SELECT coalesce(sum(next_offset), 0)::bigint FROM factline_projector_positions \
                     WHERE projector = 'order_summary' AND topic = $1",
                    &[orders],
                )
                .await
                .ok()?
                .get(0);
            (next == 12).then_some(())
        }
    })
    .await;
    assert_eq!(
        factline_testkit::postgres::rows_as_json(&world.database_url, ORDERS).await,
        before
    );
    world.stop().await;
}

/// How many records a dry run of `factline replay ARGS` would send.
async fn dry_count(world: &World, prefix: &str, args: &[String]) -> serde_json::Value {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    replay(world, prefix, &args).await["records"].clone()
}

/// A selection (event type, key, time range) is counted by a dry run exactly as a real run
/// sends it, across many archive objects (one record each here), and a time range outside
/// every record selects nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_is_counted_and_sent_across_archive_objects() {
    let world = World::start(&[Projector::OrderSummary], |_| {}).await;
    let ids: Vec<String> = (0..6).map(|_| unique("o")).collect();
    for o in &ids {
        world
            .command("PlaceOrder", order(o, "c-1", "tea", 1, 100))
            .await;
    }
    for o in &ids[..2] {
        world
            .command(
                "ShipOrder",
                serde_json::json!({"order_id": o, "carrier": "DHL", "tracking_id": "JD1"}),
            )
            .await;
    }
    caught_up(&world).await;
    let orders = format!("{}orders", world.prefix);
    let one_per_object = CutRules {
        max_records: 1,
        max_bytes: 1 << 20,
    };
    let prefix = archive::archive_orders(&world, one_per_object, 8).await;
    let count = |args: &[&str]| {
        let mut full = vec!["--topic".to_owned(), orders.clone()];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        full
    };
    assert_eq!(dry_count(&world, &prefix, &count(&[])).await, 8);
    assert_eq!(
        dry_count(&world, &prefix, &count(&["--type", "OrderShipped"])).await,
        2
    );
    assert_eq!(
        dry_count(&world, &prefix, &count(&["--key", &ids[0]])).await,
        2
    );
    assert_eq!(
        dry_count(&world, &prefix, &count(&["--key", &ids[5]])).await,
        1
    );
    assert_eq!(
        dry_count(
            &world,
            &prefix,
            &count(&["--until", "2999-01-01T00:00:00Z"])
        )
        .await,
        8
    );
    assert_eq!(
        dry_count(&world, &prefix, &count(&["--from", "2999-01-01T00:00:00Z"])).await,
        0
    );
    assert_eq!(
        dry_count(
            &world,
            &prefix,
            &count(&["--until", "2000-01-01T00:00:00Z"])
        )
        .await,
        0
    );

    let target = format!("{}orders_shipped", world.prefix);
    let config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
    factline_schemas::topics::create_topics(&config, std::slice::from_ref(&target), 3, 1)
        .await
        .unwrap();
    let sent = replay(
        &world,
        &prefix,
        &[
            "--topic",
            &orders,
            "--to-topic",
            &target,
            "--type",
            "OrderShipped",
            "--yes",
        ],
    )
    .await;
    assert_eq!(sent["sent"], 2);
    let copies = read_topic(&target);
    assert_eq!(copies.len(), 2);
    for (_, value, headers) in copies.values() {
        assert!(value.is_some());
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "event_type" && v.as_deref() == Some(b"OrderShipped".as_slice())),
            "{headers:?}"
        );
    }
    world.stop().await;
}
