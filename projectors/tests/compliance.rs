//! The compliance suite of the PostgreSQL projectors, against the real local stack
//! (KAFKA_BROKERS, SCHEMA_REGISTRY_URL, DATABASE_URL). Each projection passes the harness's
//! properties through one `compliance!` line (see `common/harness.rs`); the tests below it
//! are the runtime's and the projections' own (outages, SIGKILL, rebuilds, locking, ...).
//! Each test has its own topics (prefix) and PostgreSQL schema, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::dataset::{self, email_changed, forgotten, placed, registered, shipped};
use common::harness::{compliance, rows, Suite};
use common::{connect, count, dump, fresh_schema, start, wait_caught_up, Fixture};
use factline_projectors::dead_letter::{
    HEADER_ERROR, HEADER_ORIGIN_OFFSET, HEADER_ORIGIN_PARTITION, HEADER_ORIGIN_TOPIC,
    HEADER_PROJECTOR,
};
use factline_projectors::declarative::{DeclarativeConfig, DeclarativeProjection};
use factline_projectors::projections;
use factline_projectors::projections::{CustomerStatsProjection, OrderSummaryProjection};
use factline_projectors::{Event, Migration, Projection, ProjectionError};
use factline_testkit::process::Service;
use rdkafka::message::{Headers, Message};
use tokio_postgres::Transaction;

const ORDERS: &str = "SELECT * FROM order_summary ORDER BY order_id";
const CUSTOMERS: &str = "SELECT * FROM customer_stats ORDER BY customer_id";
/// How many event ids the `order_summary` rows remember (each is 16 bytes of `applied_ids`).
const ORDER_APPLIED_IDS: &str =
    "SELECT coalesce(sum(length(applied_ids) / 16), 0)::bigint FROM order_summary";

/// A declarative projection from its configuration text.
fn declarative(text: &str) -> DeclarativeProjection {
    DeclarativeProjection::new(DeclarativeConfig::parse(text).unwrap())
}

compliance!(
    order_summary,
    Suite::postgres(OrderSummaryProjection, rows(ORDERS))
);
compliance!(
    customer_stats,
    Suite::postgres(CustomerStatsProjection, rows(CUSTOMERS))
);
compliance!(
    declarative_order_summary,
    Suite::postgres(
        declarative(include_str!("../config/order_summary.toml")),
        rows(ORDERS)
    )
);
compliance!(
    declarative_customer_directory,
    Suite::postgres(
        declarative(include_str!("../config/customer_directory.toml")),
        rows("SELECT * FROM customer_directory ORDER BY customer_id")
    )
);
compliance!(
    orders_per_day,
    Suite::postgres(
        projections::orders_per_day::OrdersPerDayProjection,
        rows("SELECT * FROM orders_per_day ORDER BY day, currency")
    )
);
// Every applied event is a row with no unique constraint: an event applied twice is a
// duplicate row, a lost one a missing row (positions left out: they differ between two logs).
compliance!(
    event_log,
    Suite::postgres(
        EventLog::default(),
        rows(
            "SELECT event_id, count(*) AS times FROM event_log GROUP BY event_id ORDER BY event_id"
        )
    )
);

/// A test projection that appends every applied event to a log with no unique constraint, so
/// an event applied twice shows up as a duplicate row and a lost one as a missing row.
#[derive(Clone)]
struct EventLog {
    name: String,
    version: u32,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog::named("event_log", 1)
    }
}

impl EventLog {
    fn named(name: &str, version: u32) -> EventLog {
        EventLog {
            name: name.to_owned(),
            version,
        }
    }
}

impl Projection for EventLog {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn topics(&self) -> Vec<String> {
        vec!["orders".into(), "customers".into()]
    }
    fn event_types(&self) -> Vec<String> {
        [
            "OrderPlaced",
            "OrderShipped",
            "OrderDelivered",
            "OrderCancelled",
            "CustomerRegistered",
            "CustomerEmailChanged",
            "CustomerForgotten",
        ]
        .map(String::from)
        .to_vec()
    }
    fn migrations(&self) -> Vec<Migration> {
        vec![Migration::new(
            "001",
            format!(
                "CREATE TABLE event_log_v{} (event_id uuid NOT NULL, topic text, part integer, \"offset\" bigint)",
                self.version
            ),
        )]
    }
    fn views(&self) -> Vec<String> {
        vec!["event_log".into()]
    }
    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        tx.execute(
            &format!(
                "INSERT INTO event_log_v{} VALUES ($1, $2, $3, $4)",
                self.version
            ),
            &[
                &event.envelope.event_id,
                &&*event.origin.topic,
                &event.origin.partition,
                &event.origin.offset,
            ],
        )
        .await?;
        Ok(())
    }
}

async fn assert_log_exact(url: &str, expected: usize) {
    let total = count(url, "SELECT count(*) FROM event_log").await;
    let distinct = count(url, "SELECT count(DISTINCT event_id) FROM event_log").await;
    assert_eq!(distinct, expected as i64, "events lost");
    assert_eq!(total, distinct, "events applied twice");
}

async fn project_once<P: Projection + Clone>(fixture: &Fixture, projection: P) -> (String, String) {
    let (schema, url) = fresh_schema().await;
    let running = start(fixture.config(&url), projection.clone());
    wait_caught_up(
        &url,
        projection.name(),
        projection.version(),
        &fixture.ends_for(&projection),
    )
    .await;
    running.stop().await;
    (schema, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_read_models_hold_the_expected_rows() {
    let mut fixture = Fixture::new(3).await;
    fixture.produce_all(&dataset::shop(10, 30)).await;

    let (_, first) = project_once(&fixture, OrderSummaryProjection).await;
    assert_eq!(dump(&first, ORDERS).await.len(), 30);

    // shipped before placed: nothing lost; delivered wins; cancelled before placed stays cancelled
    let o2 = dump(&first, "SELECT status, total_cents, tracking_id, delivered_at IS NOT NULL AS d FROM order_summary WHERE order_id = 'o-2'").await;
    assert_eq!(
        o2,
        vec![r#"{"status":"delivered","total_cents":756,"tracking_id":"T2","d":true}"#]
    );
    let o4 = dump(
        &first,
        "SELECT status, customer_id FROM order_summary WHERE order_id = 'o-4'",
    )
    .await;
    assert_eq!(o4, vec![r#"{"status":"cancelled","customer_id":"c-4"}"#]);

    let (_, a) = project_once(&fixture, CustomerStatsProjection).await;
    assert_eq!(dump(&a, CUSTOMERS).await.len(), 10);
    // c-4 was forgotten, then a late email change arrived: personal data stays erased
    let c4 = dump(
        &a,
        "SELECT name, email, forgotten FROM customer_stats WHERE customer_id = 'c-4'",
    )
    .await;
    assert_eq!(c4, vec![r#"{"name":null,"email":null,"forgotten":true}"#]);
    // c-1: orders o-1 (2 x 251), o-11 (4 x 261) and o-21, cancelled (21 % 6 == 3)
    let c1 = dump(&a, "SELECT order_count, cancelled_count, lifetime_value_cents, email FROM customer_stats WHERE customer_id = 'c-1'").await;
    assert_eq!(
        c1,
        vec![
            r#"{"order_count":2,"cancelled_count":1,"lifetime_value_cents":{"EUR": 1546},"email":"c-1@example.com"}"#
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_id_at_two_offsets_changes_the_read_model_once() {
    let mut fixture = Fixture::new(1).await;
    let original = placed("o-1", "c-1", 2, 450, 10);
    // Same event id, different content and a later timestamp: applying it would overwrite.
    let mut copy = placed("o-1", "c-9", 3, 999, 50);
    copy.event_id = original.event_id;
    fixture.produce(&original).await;
    fixture.produce(&shipped("o-1", "T1", 20)).await;
    fixture.produce(&copy).await;
    fixture.produce(&original).await;

    let (_, url) = project_once(&fixture, OrderSummaryProjection).await;
    let row = dump(
        &url,
        "SELECT customer_id, total_cents, item_count, status FROM order_summary",
    )
    .await;
    assert_eq!(
        row,
        vec![r#"{"customer_id":"c-1","total_cents":900,"item_count":2,"status":"shipped"}"#]
    );
    // order_summary remembers the two ids in its row; the runtime keeps none for it
    assert_eq!(count(&url, ORDER_APPLIED_IDS).await, 2);
    assert_eq!(
        count(&url, "SELECT count(*) FROM factline_projector_applied").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_processing_goes_on() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    let headers = |event_type: &str| {
        vec![
            ("event_id", uuid::Uuid::new_v4().to_string()),
            ("event_type", event_type.to_owned()),
            ("command_id", uuid::Uuid::new_v4().to_string()),
            ("correlation_id", "x".to_owned()),
            ("occurred_at", "2026-01-01T00:00:00.000Z".to_owned()),
        ]
    };
    let garbage = b"not avro at all".to_vec();
    let unknown_id = [0u8, 0x7f, 0xff, 0xff, 0xf0, 2, 4, 6].to_vec();
    let mut rejected = placed("o-bad", "c-1", 2, 100, 2);
    rejected.body["total_cents"] = serde_json::json!(12345); // not the sum of its lines
    let mut poison = vec![
        fixture
            .produce_raw("orders", "k1", &garbage, &headers("OrderPlaced"))
            .await,
        fixture
            .produce_raw("orders", "k2", &unknown_id, &headers("OrderShipped"))
            .await,
    ];
    poison.push(fixture.produce(&rejected).await);
    fixture.produce(&placed("o-2", "c-1", 1, 200, 3)).await;

    // the unknown schema id may heal (a registry replica behind): retried for the bound only
    let (_, url) = fresh_schema().await;
    let mut config = fixture.config(&url);
    config.registry_retry_ms = 500;
    let running = start(config, OrderSummaryProjection);
    wait_caught_up(
        &url,
        factline_projectors::projections::order_summary::NAME,
        factline_projectors::projections::order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    running.stop().await;
    let ids = dump(&url, "SELECT order_id FROM order_summary ORDER BY order_id").await;
    assert_eq!(ids, vec![r#"{"order_id":"o-1"}"#, r#"{"order_id":"o-2"}"#]);
    // and recorded for the read API, one row per record
    let rows = dump(
        &url,
        "SELECT projector, partition, \"offset\" FROM factline_projector_dead_letters \
         WHERE error <> '' ORDER BY \"offset\"",
    )
    .await;
    let expected: Vec<String> = poison
        .iter()
        .map(|(p, o)| format!(r#"{{"projector":"order_summary","partition":{p},"offset":{o}}}"#))
        .collect();
    assert_eq!(rows, expected);

    let consumer = fixture.dead_letter_reader("orders");
    let mut letters = Vec::new();
    while letters.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("dead letters missing")
            .unwrap();
        let headers: HashMap<String, String> = message
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        letters.push((
            headers,
            message.key().unwrap().to_vec(),
            message.payload().unwrap().to_vec(),
        ));
    }
    let expected_payloads = [garbage, unknown_id];
    for (i, (headers, key, payload)) in letters.iter().enumerate() {
        assert_eq!(headers[HEADER_PROJECTOR], "order_summary");
        assert_eq!(headers[HEADER_ORIGIN_TOPIC], fixture.topic("orders"));
        assert_eq!(headers[HEADER_ORIGIN_PARTITION], poison[i].0.to_string());
        assert_eq!(headers[HEADER_ORIGIN_OFFSET], poison[i].1.to_string());
        assert!(!headers[HEADER_ERROR].is_empty());
        assert!(headers.contains_key("event_id"), "original headers kept");
        if i < 2 {
            assert_eq!(payload, &expected_payloads[i]);
            assert_eq!(key, format!("k{}", i + 1).as_bytes());
        } else {
            assert!(
                headers[HEADER_ERROR].contains("rejected"),
                "{}",
                headers[HEADER_ERROR]
            );
            assert_eq!(key, b"o-bad");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_recovers_from_a_postgresql_outage() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(8, 40);
    let (before, during) = events.split_at(events.len() / 3);
    fixture.produce_all(before).await;

    let (schema, direct) = fresh_schema().await;
    let pg: tokio_postgres::Config = common::env("DATABASE_URL").parse().unwrap();
    let host = match &pg.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("tcp host expected, got {other:?}"),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let proxy = common::proxy::Proxy::start(format!("{host}:{port}")).await;
    let user = pg.get_user().unwrap_or("postgres");
    let dbname = pg.get_dbname().unwrap_or(user);
    let password = pg
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let through_proxy = format!(
        "postgres://{user}{password}@{}/{dbname}?options=-csearch_path%3D{schema}",
        proxy.addr
    );
    let mut config = fixture.config(&through_proxy);
    config.batch_max_events = Some(5);
    // a name of its own, so the retry metric below is this test's
    let name = format!("{}event_log", fixture.prefix);
    let running = start(config, EventLog::named(&name, 1));
    wait_caught_up(&direct, &name, 1, &fixture.ends).await;

    proxy.cut();
    fixture.produce_all(during).await;
    // the outage is observed (a batch failed and is being retried), not merely waited out
    common::wait_for_sink_retry(&name).await;
    proxy.restore();

    wait_caught_up(&direct, &name, 1, &fixture.ends).await;
    running.stop().await;
    assert_log_exact(&direct, events.len()).await;
    let metrics = factline_projectors::telemetry::prometheus().render();
    let retried = metrics.lines().any(|l| {
        l.starts_with("factline_projector_retries_total")
            && l.contains(&format!("projector=\"{name}\""))
            // the sink's batch, or the instance slot's lock connection, saw it first
            && (l.contains("stage=\"sink\"") || l.contains("stage=\"membership\""))
    });
    assert!(
        retried,
        "the outage was not observed by the projector:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_loses_nothing_and_applies_nothing_twice() {
    let mut fixture = Fixture::new(3).await;
    let events = dataset::shop(40, 400);
    fixture.produce_all(&events).await;
    // the uninterrupted reference run (first: it shares the children's consumer group)
    let (_, reference) = project_once(&fixture, OrderSummaryProjection).await;
    let (_, url) = fresh_schema().await;
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_factline-projector"))
            .arg("order_summary")
            .env("KAFKA_BROKERS", &fixture.brokers)
            .env("SCHEMA_REGISTRY_URL", &fixture.registry)
            .env("DATABASE_URL", &url)
            .env("PROJECTOR_TOPIC_PREFIX", &fixture.prefix)
            .env("PROJECTOR_BATCH_MAX_EVENTS", "10")
            // no membership settings: the shipped defaults (static membership, one slot per
            // instance) give the restarted process the killed one's partitions back at once
            .env("RUST_LOG", "info")
            .spawn()
            .map(|child| Service { child })
            .unwrap()
    };
    let total: i64 = fixture.ends_for(&OrderSummaryProjection).values().sum();
    let mut child = spawn();
    // kill it once it has committed something but not everything
    let client = connect(&url).await;
    loop {
        let done: i64 = client
            .query_one(
                "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions WHERE projector = 'order_summary'",
                &[],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if done > 0 {
            assert!(
                done < total,
                "finished before it could be killed; use more events"
            );
            break;
        }
        assert!(child.running(), "projector exited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill(); // SIGKILL

    let mut child = spawn();
    wait_caught_up(
        &url,
        projections::order_summary::NAME,
        projections::order_summary::VERSION,
        &fixture.ends_for(&OrderSummaryProjection),
    )
    .await;
    assert!(child.terminate().success(), "graceful stop failed");

    assert_eq!(dump(&url, ORDERS).await, dump(&reference, ORDERS).await);
    assert_eq!(
        count(&url, ORDER_APPLIED_IDS).await,
        count(&reference, ORDER_APPLIED_IDS).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarative_customer_directory_follows_its_config() {
    let mut fixture = Fixture::new(2).await;
    let events = vec![
        registered("c-1", "a@x", 1),
        email_changed("c-1", "b@x", 5),
        email_changed("c-2", "early@x", 9), // before the registration
        registered("c-2", "reg@x", 2),
        registered("c-3", "c@x", 3),
        forgotten("c-3", 10),
        email_changed("c-3", "late@x", 20), // after forgetting: must not reappear
        forgotten("c-4", 10),               // forgotten before registered (replay order)
        registered("c-4", "d@x", 4),
    ];
    fixture.produce_all(&events).await;
    let text = include_str!("../config/customer_directory.toml");
    let projection = DeclarativeProjection::new(DeclarativeConfig::parse(text).unwrap());
    let (_, a) = project_once(&fixture, projection.clone()).await;
    let (_, b) = project_once(&fixture, projection).await;
    let q =
        "SELECT customer_id, name, email, forgotten FROM customer_directory ORDER BY customer_id";
    let rows = dump(&a, q).await;
    assert_eq!(
        rows,
        vec![
            r#"{"customer_id":"c-1","name":"Name c-1","email":"b@x","forgotten":false}"#,
            r#"{"customer_id":"c-2","name":"Name c-2","email":"early@x","forgotten":false}"#,
            r#"{"customer_id":"c-3","name":null,"email":null,"forgotten":true}"#,
            r#"{"customer_id":"c-4","name":null,"email":null,"forgotten":true}"#,
        ]
    );
    let all = "SELECT * FROM customer_directory ORDER BY customer_id";
    assert_eq!(dump(&a, all).await, dump(&b, all).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_rebuilds_beside_the_old_one_and_takes_over_when_caught_up() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(5, 20);
    fixture.produce_all(&events).await;
    let (_, url) = fresh_schema().await;
    let name = "event_log";

    let v1 = start(fixture.config(&url), EventLog::named(name, 1));
    wait_caught_up(&url, name, 1, &fixture.ends).await;
    let view = "SELECT definition FROM pg_views WHERE viewname = 'event_log' AND schemaname = current_schema()";
    assert!(dump(&url, view).await[0].contains("event_log_v1"));

    // A reader queries the live view without pause from before v2 starts until v2's table
    // answers (the view's definition, read by the same statement, names the table): no query
    // may fail and none may see an empty model. The test waits for conditions (an answer from v1, then from v2), never
    // for an amount of work in a time window.
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(String::new());
    let reader = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = connect(&url).await;
            let (mut answered_by, mut failures) = (Vec::<String>::new(), Vec::new());
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            loop {
                let mut table = String::new();
                match client
                    .query(
                        "SELECT (SELECT definition FROM pg_views WHERE viewname = 'event_log' \
                           AND schemaname = current_schema()), count(*) FROM event_log",
                        &[],
                    )
                    .await
                {
                    Ok(rows) => match rows.as_slice() {
                        [row] if row.get::<_, i64>(1) > 0 => {
                            let definition: String = row.get(0);
                            table = ["event_log_v2", "event_log_v1"]
                                .into_iter()
                                .find(|t| definition.contains(t))
                                .unwrap_or("unknown")
                                .to_owned();
                            if answered_by.last() != Some(&table) {
                                answered_by.push(table.clone());
                            }
                            let _ = seen_tx.send(table.clone());
                        }
                        _ => failures.push(format!("the live view answered {} rows", rows.len())),
                    },
                    Err(error) => failures.push(error.to_string()),
                }
                if table.ends_with("event_log_v2") || std::time::Instant::now() > deadline {
                    return (answered_by, failures);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::timeout(
        Duration::from_secs(60),
        seen_rx.wait_for(|table| !table.is_empty()),
    )
    .await
    .expect("the reader got no answer")
    .unwrap();

    // v2 starts while v1 keeps serving; more events arrive meanwhile
    let v2 = start(fixture.config(&url), EventLog::named(name, 2));
    fixture
        .produce(&registered("c-extra", "x@example.com", 7000))
        .await;
    wait_caught_up(&url, name, 1, &fixture.ends).await;
    wait_caught_up(&url, name, 2, &fixture.ends).await;

    let client = connect(&url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let live: Option<i32> = client
            .query_opt(
                "SELECT version FROM factline_projector_rebuilds WHERE projector = $1 AND state = 'live'",
                &[&name],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if live == Some(2) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "v2 never went live");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dump(&url, view).await[0].contains("event_log_v2"));
    // rebuild progress: recorded while building, complete at the swap; registration at bootstrap
    let total = events.len() + 1; // both topics start at offset 0
    let progress = dump(
        &url,
        "SELECT version, sink, topics, read_models, events_done, events_total, eta_seconds, \
         progress_at IS NOT NULL AS recorded FROM factline_projector_rebuilds ORDER BY version",
    )
    .await;
    let topics = format!(
        r#"["{}","{}"]"#,
        fixture.topic("orders"),
        fixture.topic("customers")
    );
    assert_eq!(
        progress,
        vec![
            format!(
                r#"{{"version":1,"sink":"postgres","topics":{topics},"read_models":["event_log"],"events_done":null,"events_total":null,"eta_seconds":null,"recorded":false}}"#
            ),
            format!(
                r#"{{"version":2,"sink":"postgres","topics":{topics},"read_models":["event_log"],"events_done":{total},"events_total":{total},"eta_seconds":0,"recorded":true}}"#
            ),
        ]
    );
    let metrics = factline_projectors::telemetry::prometheus().render();
    for metric in [
        "factline_projector_rebuild_events_done",
        "factline_projector_rebuild_events_total",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(metric)
                && l.contains("projector=\"event_log\"")
                && l.contains("version=\"2\"")
                && l.ends_with(&format!(" {total}"))),
            "{metric} missing:\n{metrics}"
        );
    }
    let (answered_by, failures) = reader.await.unwrap();
    assert!(
        failures.is_empty(),
        "queries failed during the rebuild: {failures:?}"
    );
    assert_eq!(
        answered_by,
        vec!["event_log_v1".to_owned(), "event_log_v2".to_owned()],
        "the reader was not answered by v1, then by v2 only"
    );
    let states = dump(
        &url,
        "SELECT version, state, swapped_at IS NOT NULL AS swapped FROM factline_projector_rebuilds ORDER BY version",
    )
    .await;
    assert_eq!(
        states,
        vec![
            r#"{"version":1,"state":"retired","swapped":true}"#,
            r#"{"version":2,"state":"live","swapped":true}"#
        ]
    );
    v1.stop().await;
    v2.stop().await;
    assert_log_exact(&url, events.len() + 1).await;
    assert_eq!(
        count(&url, "SELECT count(*) FROM event_log_v1").await,
        count(&url, "SELECT count(*) FROM event_log_v2").await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_served_over_http_labelled_with_the_projector() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&placed("o-1", "c-1", 1, 100, 1)).await;
    fixture.produce(&shipped("o-1", "T", 2)).await;
    let (_, url) = fresh_schema().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = fixture.config(&url);
    config.http_addr = Some(addr);
    let name = format!("{}http", fixture.prefix);
    let running = start(config, EventLog::named(&name, 1));
    wait_caught_up(&url, &name, 1, &fixture.ends).await;

    let health: serde_json::Value = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["projector"], name.as_str());
    assert_eq!(health["state"], "running");
    let label = format!("projector=\"{name}\"");
    // lag needs the client's statistics (every second): poll until it is exported
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let lag = metrics.lines().any(|l| {
            l.starts_with("factline_projector_lag_events")
                && l.contains(&label)
                && l.ends_with(" 0")
        });
        if lag || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for metric in [
        "factline_projector_events_applied_total",
        "factline_projector_batch_seconds",
        "factline_projector_lag_events",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(metric) && l.contains(&label)),
            "{metric} for {name} missing:\n{metrics}"
        );
    }
    let applied = metrics
        .lines()
        .find(|l| l.starts_with("factline_projector_events_applied_total") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(applied, Some(2.0));
    let lag_line = metrics
        .lines()
        .find(|l| l.starts_with("factline_projector_lag_events") && l.contains(&label))
        .unwrap();
    assert!(lag_line.ends_with(" 0"), "{lag_line}");
    // positions carry the high watermark for readers
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let high = dump(
            &url,
            "SELECT next_offset, high_watermark FROM factline_projector_positions",
        )
        .await;
        if high == vec![r#"{"next_offset":2,"high_watermark":2}"#] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "high watermark not recorded: {high:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_is_retried_without_skipping_records() {
    let mut fixture = Fixture::new(1).await;
    let events = dataset::shop(3, 6);
    fixture.produce_all(&events).await;
    let upstream = fixture
        .registry
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = common::proxy::Proxy::start(upstream).await;
    proxy.cut(); // the registry is unreachable from the start
    let (_, url) = fresh_schema().await;
    let mut config = fixture.config(&url);
    config.schema_registry_url = format!("http://{}", proxy.addr);
    let name = format!("{}registry_outage", fixture.prefix);
    let running = start(config, EventLog::named(&name, 1));

    // the outage is observed (decoding failed and is being retried), not merely waited out
    common::wait_for_retry(&name, "decode").await;
    let committed = count(
        &url,
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions",
    )
    .await;
    assert_eq!(
        committed, 0,
        "records were skipped while the registry was down"
    );
    proxy.restore();

    wait_caught_up(&url, &name, 1, &fixture.ends).await;
    running.stop().await;
    assert_log_exact(&url, events.len()).await; // none dead-lettered, none lost
    let metrics = factline_projectors::telemetry::prometheus().render();
    assert!(metrics.lines().any(|l| {
        l.starts_with("factline_projector_retries_total")
            && l.contains(&format!("projector=\"{name}\""))
            && l.contains("stage=\"decode\"")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarative_binary_runs_a_config_file() {
    let mut fixture = Fixture::new(1).await;
    fixture
        .produce_all(&[registered("c-1", "a@x", 1), email_changed("c-1", "b@x", 2)])
        .await;
    let (_, url) = fresh_schema().await;
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/customer_directory.toml"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_factline-projector"))
        .args(["--config", config])
        .env("KAFKA_BROKERS", &fixture.brokers)
        .env("SCHEMA_REGISTRY_URL", &fixture.registry)
        .env("DATABASE_URL", &url)
        .env("PROJECTOR_TOPIC_PREFIX", &fixture.prefix)
        .env("RUST_LOG", "warn")
        .spawn()
        .map(|child| Service { child })
        .unwrap();
    let text = std::fs::read_to_string(config).unwrap();
    let projection = DeclarativeProjection::new(DeclarativeConfig::parse(&text).unwrap());
    wait_caught_up(
        &url,
        "customer_directory",
        1,
        &fixture.ends_for(&projection),
    )
    .await;
    assert!(child.terminate().success(), "graceful stop failed");
    assert_eq!(
        dump(&url, "SELECT customer_id, email FROM customer_directory").await,
        vec![r#"{"customer_id":"c-1","email":"b@x"}"#]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarative_order_summary_equals_the_code_one() {
    let mut fixture = Fixture::new(3).await;
    let mut events = dataset::shop(6, 36);
    // late and repeated facts: a second, later shipment; an earlier cancellation after a
    // later one; a delivery arriving before everything else of its order
    events.push(shipped("o-1", "T1-again", 500));
    for (t, reason) in [(400, "second thoughts"), (300, "first thoughts")] {
        let at = dataset::at(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        events.push(dataset::event(
            "orders",
            "o-3",
            "OrderCancelled",
            t,
            serde_json::json!({"order_id": "o-3", "reason": reason, "cancelled_at": at}),
            reason,
        ));
    }
    events.insert(0, dataset::delivered("o-0", 900));
    fixture.produce_all(&events).await;
    let text = include_str!("../config/order_summary.toml");
    let declarative = DeclarativeProjection::new(DeclarativeConfig::parse(text).unwrap());
    let (_, by_config) = project_once(&fixture, declarative).await;
    let (_, by_code) = project_once(&fixture, OrderSummaryProjection).await;
    let columns = "SELECT order_id, customer_id, status, currency, total_cents, item_count, \
                   placed_at, shipped_at, delivered_at, cancelled_at, cancel_reason, carrier, \
                   tracking_id, updated_at FROM order_summary ORDER BY order_id";
    let expected = dump(&by_code, columns).await;
    assert_eq!(expected.len(), 36);
    assert_eq!(dump(&by_config, columns).await, expected);
}

/// A fresh schema with the customer_stats tables; returns its URL.
async fn customer_stats_schema() -> String {
    let (_, url) = fresh_schema().await;
    let client = connect(&url).await;
    for migration in CustomerStatsProjection.migrations() {
        client.batch_execute(&migration.sql).await.unwrap();
    }
    url
}

/// Applies events in one committed transaction, as a batch.
async fn apply_committed(url: &str, events: &[common::TestEvent]) {
    let mut client = connect(url).await;
    let tx = client.transaction().await.unwrap();
    let events: Vec<Event> = events.iter().map(|e| e.to_event(0)).collect();
    let refs: Vec<&Event> = events.iter().collect();
    CustomerStatsProjection
        .apply_batch(&tx, &refs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Waits until the backend `pid` is blocked waiting for a lock.
async fn wait_until_blocked_on_a_lock(url: &str, pid: i32) {
    let observer = connect(url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: Option<String> = observer
            .query_one(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting.as_deref() == Some("Lock") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second transaction never waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Applies an event in a transaction of its own on a new connection, in a task; returns the
/// connection's backend pid and the task.
async fn apply_in_task(url: &str, event: common::TestEvent) -> (i32, tokio::task::JoinHandle<()>) {
    let mut client = connect(url).await;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let task = tokio::spawn(async move {
        let event = event.to_event(0);
        let tx = client.transaction().await.unwrap();
        CustomerStatsProjection
            .apply_batch(&tx, &[&event])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    (pid, task)
}

/// Two instances place orders of one customer at the same time (the orders topic is keyed by
/// order id). The test interleaves them deterministically: a third transaction holds the
/// customer's row (as an instance applying a customer event does), both instances start and
/// wait for it, then it ends and both go on. Both orders must count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_stats_counts_both_orders_of_two_concurrent_instances() {
    let url = customer_stats_schema().await;
    apply_committed(&url, &[registered("c-1", "a@x", 1)]).await;

    let mut holder = connect(&url).await;
    let hold = holder.transaction().await.unwrap();
    hold.query(
        "SELECT * FROM customer_stats_v1 WHERE customer_id = 'c-1' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let (pid_one, one) = apply_in_task(&url, placed("o-1", "c-1", 1, 100, 10)).await;
    wait_until_blocked_on_a_lock(&url, pid_one).await;
    let (pid_two, two) = apply_in_task(&url, placed("o-2", "c-1", 1, 250, 11)).await;
    wait_until_blocked_on_a_lock(&url, pid_two).await;
    hold.rollback().await.unwrap();
    one.await.unwrap();
    two.await.unwrap();

    let row = dump(
        &url,
        "SELECT order_count, lifetime_value_cents FROM customer_stats_v1 WHERE customer_id = 'c-1'",
    )
    .await;
    assert_eq!(
        row,
        vec![r#"{"order_count":2,"lifetime_value_cents":{"EUR": 350}}"#]
    );
}

/// An order placed again under another customer (a later placement) moves to that customer:
/// it counts for the new one only, whether the two placements come in one batch or two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_stats_counts_a_moved_order_for_the_new_customer_only() {
    let first = placed("o-1", "c-a", 2, 100, 10);
    let mut again = placed("o-1", "c-b", 3, 100, 20);
    again.event_id = uuid::Uuid::new_v4();
    let query = "SELECT customer_id, order_count, lifetime_value_cents FROM customer_stats_v1 \
                 ORDER BY customer_id";
    let expected = vec![
        r#"{"customer_id":"c-a","order_count":0,"lifetime_value_cents":{}}"#.to_owned(),
        r#"{"customer_id":"c-b","order_count":1,"lifetime_value_cents":{"EUR": 300}}"#.to_owned(),
    ];

    let apart = customer_stats_schema().await;
    apply_committed(&apart, std::slice::from_ref(&first)).await;
    apply_committed(&apart, std::slice::from_ref(&again)).await;
    assert_eq!(dump(&apart, query).await, expected);

    let together = customer_stats_schema().await;
    apply_committed(&together, &[first.clone(), again.clone()]).await;
    assert_eq!(dump(&together, query).await, expected);

    // the older placement re-delivered later changes nothing
    apply_committed(&together, &[first]).await;
    assert_eq!(dump(&together, query).await, expected);
}

/// Applied ids older than the dedupe window (default 7 days) are pruned, and a retired
/// version's whatever their age; newer ones of the live version are kept. The same event
/// re-produced after its id was pruned is applied again, which leaves an idempotent read model
/// as it was. (`customer_stats` leaves deduping to the runtime's table.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_ids_beyond_the_dedupe_window_are_pruned() {
    let mut fixture = Fixture::new(1).await;
    let first = registered("c-1", "a@x", 10);
    fixture.produce(&first).await;
    fixture.produce(&placed("o-1", "c-1", 2, 450, 20)).await;
    let (_, url) = fresh_schema().await;
    let ends = |f: &Fixture| f.ends_for(&CustomerStatsProjection);
    let name = projections::customer_stats::NAME;
    let running = start(fixture.config(&url), CustomerStatsProjection);
    wait_caught_up(&url, name, 1, &ends(&fixture)).await;
    running.stop().await;
    assert_eq!(
        count(&url, "SELECT count(*) FROM factline_projector_applied").await,
        2
    );

    // the two ids were applied 8 days ago; a retired version applied one just now
    let client = connect(&url).await;
    client
        .batch_execute(
            "UPDATE factline_projector_applied SET applied_at = now() - interval '8 days'; \
             INSERT INTO factline_projector_rebuilds (projector, version, state) \
             VALUES ('customer_stats', 0, 'retired'); \
             INSERT INTO factline_projector_applied (projector, version, event_id) \
             VALUES ('customer_stats', 0, gen_random_uuid())",
        )
        .await
        .unwrap();
    fixture.produce(&placed("o-2", "c-1", 1, 300, 30)).await;
    let running = start(fixture.config(&url), CustomerStatsProjection);
    wait_caught_up(&url, name, 1, &ends(&fixture)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while count(&url, "SELECT count(*) FROM factline_projector_applied").await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "old applied ids were not pruned: {:?}",
            dump(
                &url,
                "SELECT version, applied_at FROM factline_projector_applied"
            )
            .await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let model = dump(&url, CUSTOMERS).await;

    // the registration again at a new offset, older than the window: applied again, no change
    fixture.produce(&first).await;
    wait_caught_up(&url, name, 1, &ends(&fixture)).await;
    running.stop().await;
    assert_eq!(dump(&url, CUSTOMERS).await, model);
    assert_eq!(
        count(&url, "SELECT count(*) FROM factline_projector_applied").await,
        2
    );
}

/// The PostgreSQL declarative sink remembers deletes too: upsert, delete, then the upsert's
/// event delivered again at a new offset leaves the row deleted (the applied id is within the
/// dedupe window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_stays_deleted_when_an_older_event_is_delivered_again() {
    let mut fixture = Fixture::new(1).await;
    let registration = registered("c-1", "a@x", 1);
    fixture.produce(&registration).await;
    fixture.produce(&forgotten("c-1", 5)).await;
    let config = DeclarativeConfig::parse(
        r#"
name = "deleting"
version = 1
topics = ["customers"]

[[tables]]
name = "deleting"
primary_key = ["customer_id"]
[tables.columns]
customer_id = "text"
email = "text"

[[on]]
event_type = "CustomerRegistered"
table = "deleting"
action = "upsert"
set = { customer_id = "customer_id", email = "email" }

[[on]]
event_type = "CustomerForgotten"
table = "deleting"
action = "delete"
key = { customer_id = "customer_id" }
"#,
    )
    .unwrap();
    let projection = DeclarativeProjection::new(config);
    let (_, url) = fresh_schema().await;
    let running = start(fixture.config(&url), projection.clone());
    wait_caught_up(&url, "deleting", 1, &fixture.ends_for(&projection)).await;
    assert_eq!(count(&url, "SELECT count(*) FROM deleting").await, 0);
    fixture.produce(&registration).await;
    wait_caught_up(&url, "deleting", 1, &fixture.ends_for(&projection)).await;
    running.stop().await;
    assert_eq!(count(&url, "SELECT count(*) FROM deleting").await, 0);
}
