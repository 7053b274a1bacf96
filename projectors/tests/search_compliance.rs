//! The compliance suite of the Elasticsearch projectors, against the real local stack
//! (KAFKA_BROKERS, SCHEMA_REGISTRY_URL, DATABASE_URL, ELASTICSEARCH_URL). Each projection
//! passes the harness's properties through one `compliance!` line (see `common/harness.rs`);
//! the tests below it are the search sink's and the projections' own (joins, tombstones, bulk
//! splitting, outages, SIGKILL, the alias swap, ...). Each test has its own topics, index
//! names (prefix) and PostgreSQL schema, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::dataset::{self, email_changed, forgotten, placed, registered, shipped};
use common::harness::{compliance, documents, documents_without, Renamed, Suite};
use common::search::{alias_targets, dump, ids, index_exists};
use common::{connect, count, fresh_schema, start_search, wait_caught_up, Fixture};
use factline_projectors::dead_letter::{HEADER_ERROR, HEADER_ORIGIN_OFFSET, HEADER_PROJECTOR};
use factline_projectors::projections::{self, EventIndexProjection, OrderSearchProjection};
use factline_projectors::SearchProjection;
use factline_testkit::process::Service;
use rdkafka::message::{Headers, Message};
use serde_json::{json, Value};

compliance!(
    order_search,
    Suite::search(
        OrderSearchProjection::new().unwrap(),
        documents("order_search", "order_id")
    )
);
// a record's offset and broker timestamp are left out: they differ between two logs holding
// the same events
compliance!(
    event_index,
    Suite::search(
        EventIndexProjection::new().unwrap(),
        documents_without("event_index", "event_id", &["offset", "timestamp"])
    )
);
compliance!(
    declarative_customer_search,
    Suite::search(
        factline_projectors::declarative::DeclarativeSearchProjection::new(
            factline_projectors::declarative::DeclarativeConfig::parse(include_str!(
                "../config/customer_search.toml"
            ))
            .unwrap()
        ),
        documents("customer_search", "customer_id")
    )
);

/// Runs a search projection over everything produced so far, indices under `{prefix}{extra}`;
/// returns the PostgreSQL URL of its positions.
async fn project_once<P: SearchProjection + Clone>(
    fixture: &Fixture,
    projection: P,
    extra: &str,
) -> String {
    let (_, url) = fresh_schema().await;
    let running = start_search(fixture.search_config(&url, extra), projection.clone());
    wait_caught_up(&url, projection.name(), projection.version(), &fixture.ends).await;
    running.stop().await;
    url
}

fn orders_alias(fixture: &Fixture, extra: &str) -> String {
    format!("{}{extra}order_search", fixture.prefix)
}

fn events_alias(fixture: &Fixture, extra: &str) -> String {
    format!("{}{extra}event_index", fixture.prefix)
}

fn source<'a>(docs: &'a [(String, Value)], id: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(i, _)| i == id)
        .unwrap_or_else(|| panic!("{id} missing"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_search_replayed_twice_gives_identical_indices_and_follows_customers() {
    let mut fixture = Fixture::new(3).await;
    fixture.produce_all(&dataset::shop(10, 30)).await;
    // customer changes after their orders: they must reach the order documents
    fixture
        .produce_all(&[
            email_changed("c-1", "final@example.com", 9000),
            forgotten("c-2", 9001),
        ])
        .await;

    project_once(&fixture, OrderSearchProjection::new().unwrap(), "a_").await;
    project_once(&fixture, OrderSearchProjection::new().unwrap(), "b_").await;
    let a = dump(&orders_alias(&fixture, "a_"), "order_id").await;
    let b = dump(&orders_alias(&fixture, "b_"), "order_id").await;
    assert_eq!(a.len(), 30);
    assert_eq!(a, b, "two replays differ");

    let o2 = source(&a, "o-2");
    assert_eq!(o2["status"], "delivered");
    assert_eq!(o2["total_cents"], 756);
    assert_eq!(o2["tracking_id"], "T2");
    assert_eq!(o2["item_names"], json!(["Earl Grey"]));
    assert_eq!(source(&a, "o-4")["status"], "cancelled");
    // c-1 changed their email after ordering; c-2 was forgotten after ordering
    for order in ["o-1", "o-11", "o-21"] {
        assert_eq!(source(&a, order)["customer_email"], "final@example.com");
        assert_eq!(source(&a, order)["customer_name"], "Name c-1");
    }
    // c-2 forgotten after ordering, c-4 forgotten before (and a late email change)
    for order in ["o-2", "o-12", "o-4", "o-14"] {
        assert_eq!(source(&a, order)["customer_name"], Value::Null, "{order}");
        assert_eq!(source(&a, order)["customer_email"], Value::Null, "{order}");
    }
    // c-0 changed email before ordering
    assert_eq!(source(&a, "o-10")["customer_email"], "new-c-0@example.com");

    let alias = orders_alias(&fixture, "a_");
    let full_text = ids(
        &alias,
        json!({"multi_match": {"query": "Name c-3", "fields": ["item_names", "customer_name"], "operator": "and"}}),
        "order_id",
    )
    .await;
    assert_eq!(full_text, vec!["o-13", "o-23", "o-3"]);
    let filtered = ids(
        &alias,
        json!({"bool": {"filter": [
            {"term": {"status": "cancelled"}},
            {"range": {"total_cents": {"gte": 1000}}},
            {"range": {"placed_at": {"gte": "2025-10-09T08:55:00Z"}}}
        ]}}),
        "order_id",
    )
    .await;
    let expected: Vec<String> = a
        .iter()
        .filter(|(_, d)| {
            d["status"] == "cancelled"
                && d["total_cents"].as_i64().unwrap() >= 1000
                && d["placed_at"].as_str().unwrap() >= "2025-10-09T08:55:00.000Z"
        })
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(filtered, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_index_replayed_twice_is_identical_and_forgets_personal_data() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(5, 10);
    fixture.produce_all(&events).await;
    // a customer forgotten after their events were indexed
    fixture.produce(&forgotten("c-1", 9000)).await;

    project_once(&fixture, EventIndexProjection::new().unwrap(), "a_").await;
    project_once(&fixture, EventIndexProjection::new().unwrap(), "b_").await;
    let a = dump(&events_alias(&fixture, "a_"), "event_id").await;
    let b = dump(&events_alias(&fixture, "b_"), "event_id").await;
    assert_eq!(a.len(), events.len() + 1);
    assert_eq!(a, b, "two replays differ");

    let placed_o0 = a
        .iter()
        .map(|(_, d)| d)
        .find(|d| d["event_type"] == "OrderPlaced" && d["key"] == "o-0")
        .unwrap();
    assert_eq!(placed_o0["topic"], fixture.topic("orders"));
    assert_eq!(placed_o0["headers"]["event_type"], "OrderPlaced");
    assert_eq!(placed_o0["payload"]["shipping_address"]["city"], "London");
    assert_eq!(placed_o0["customer_id"], "c-0");
    assert_eq!(placed_o0["forgotten"], false);
    assert!(placed_o0["timestamp"].is_string() && placed_o0["occurred_at"].is_string());

    // c-1 (forgotten last) and c-4 (forgotten in the shop data): nothing personal anywhere
    for customer in ["c-1", "c-4"] {
        let theirs: Vec<&Value> = a
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d["customer_id"] == customer)
            .collect();
        assert!(theirs.len() >= 2, "{customer}");
        for doc in theirs {
            assert_eq!(doc["forgotten"], true, "{doc}");
            for field in ["name", "email", "shipping_address"] {
                assert!(doc["payload"].get(field).is_none(), "{doc}");
            }
            assert!(
                !doc["text"].as_str().unwrap().contains("@example.com"),
                "{doc}"
            );
            assert!(!doc["text"].as_str().unwrap().contains("Name c-"), "{doc}");
        }
    }
    let alias = events_alias(&fixture, "a_");
    let hits = ids(
        &alias,
        json!({"match_phrase": {"text": "c-1@example.com"}}),
        "event_id",
    )
    .await;
    assert!(
        hits.is_empty(),
        "the forgotten email is still searchable: {hits:?}"
    );
    let control = ids(
        &alias,
        json!({"match_phrase": {"text": "c-3@example.com"}}),
        "event_id",
    )
    .await;
    // c-3@example.com and new-c-3@example.com: phrase search finds a remembered email
    assert_eq!(control.len(), 2);
    let hits = ids(
        &alias,
        json!({"term": {"payload.email.keyword": "c-3@example.com"}}),
        "event_id",
    )
    .await;
    assert_eq!(hits.len(), 1);
    let by_type = ids(
        &alias,
        json!({"term": {"event_type": "OrderPlaced"}}),
        "event_id",
    )
    .await;
    assert_eq!(by_type.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_change_nothing_and_poison_is_dead_lettered() {
    let mut fixture = Fixture::new(1).await;
    let original = placed("o-1", "c-1", 2, 450, 10);
    // same event id, other content and a later time: applying it would overwrite
    let mut copy = placed("o-1", "c-9", 3, 999, 50);
    copy.event_id = original.event_id;
    fixture.produce(&registered("c-1", "a@x", 1)).await;
    fixture.produce(&original).await;
    fixture.produce(&shipped("o-1", "T1", 20)).await;
    fixture.produce(&copy).await;
    fixture.produce(&original).await;
    let headers = vec![
        ("event_id", uuid::Uuid::new_v4().to_string()),
        ("event_type", "OrderPlaced".to_owned()),
        ("command_id", uuid::Uuid::new_v4().to_string()),
        ("correlation_id", "x".to_owned()),
        ("occurred_at", "2026-01-01T00:00:00.000Z".to_owned()),
    ];
    let garbage = fixture
        .produce_raw("orders", "k1", b"not avro at all", &headers)
        .await;
    let mut rejected = placed("o-bad", "c-1", 2, 100, 2);
    rejected.body["total_cents"] = json!(12345); // not the sum of its lines
    let rejected_at = fixture.produce(&rejected).await;
    fixture.produce(&placed("o-2", "c-1", 1, 200, 3)).await;

    let url = project_once(&fixture, OrderSearchProjection::new().unwrap(), "").await;
    let docs = dump(&orders_alias(&fixture, ""), "order_id").await;
    assert_eq!(
        docs.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["o-1", "o-2"]
    );
    let o1 = source(&docs, "o-1");
    assert_eq!(o1["customer_id"], "c-1");
    assert_eq!(o1["total_cents"], 900);
    assert_eq!(o1["status"], "shipped");
    assert_eq!(o1["customer_email"], "a@x");

    // dead letters: on the dlq topic and as rows for the read API
    let rows = common::dump(
        &url,
        "SELECT topic, partition, \"offset\", error <> '' AS has_error FROM factline_projector_dead_letters ORDER BY \"offset\"",
    )
    .await;
    let topic = fixture.topic("orders");
    assert_eq!(
        rows,
        vec![
            format!(
                r#"{{"topic":"{topic}","partition":0,"offset":{},"has_error":true}}"#,
                garbage.1
            ),
            format!(
                r#"{{"topic":"{topic}","partition":0,"offset":{},"has_error":true}}"#,
                rejected_at.1
            ),
        ]
    );
    let consumer = fixture.dead_letter_reader("orders");
    let mut offsets = Vec::new();
    while offsets.len() < 2 {
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
        assert_eq!(headers[HEADER_PROJECTOR], projections::order_search::NAME);
        assert!(!headers[HEADER_ERROR].is_empty());
        offsets.push(headers[HEADER_ORIGIN_OFFSET].parse::<i64>().unwrap());
    }
    assert_eq!(offsets, vec![garbage.1, rejected_at.1]);

    // a second run over the same indices (positions reset) changes nothing: idempotent writes
    let before = dump(&orders_alias(&fixture, ""), "order_id").await;
    connect(&url)
        .await
        .batch_execute("DELETE FROM factline_projector_positions")
        .await
        .unwrap();
    let running = start_search(
        fixture.search_config(&url, ""),
        OrderSearchProjection::new().unwrap(),
    );
    wait_caught_up(
        &url,
        projections::order_search::NAME,
        projections::order_search::VERSION,
        &fixture.ends,
    )
    .await;
    running.stop().await;
    assert_eq!(dump(&orders_alias(&fixture, ""), "order_id").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_bulk_then_restart_gives_the_same_documents() {
    let mut fixture = Fixture::new(3).await;
    let events = dataset::shop(40, 300);
    fixture.produce_all(&events).await;
    project_once(&fixture, OrderSearchProjection::new().unwrap(), "ref_").await;
    let (_, url) = fresh_schema().await;
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_factline-projector"))
            .arg("order_search")
            .env("KAFKA_BROKERS", &fixture.brokers)
            .env("SCHEMA_REGISTRY_URL", &fixture.registry)
            .env("DATABASE_URL", &url)
            .env("ELASTICSEARCH_URL", common::search::es_url())
            .env("PROJECTOR_TOPIC_PREFIX", &fixture.prefix)
            .env("PROJECTOR_INDEX_PREFIX", format!("{}run_", fixture.prefix))
            .env("PROJECTOR_BATCH_MAX_EVENTS", "10")
            .env("RUST_LOG", "warn")
            .spawn()
            .map(|child| Service { child })
            .unwrap()
    };
    let total: i64 = fixture.ends.values().sum();
    let mut child = spawn();
    let client = connect(&url).await;
    loop {
        let done: i64 = client
            .query_one(
                "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions",
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // positions move only after a bulk succeeded: the next bulks are in flight now
    tokio::time::sleep(Duration::from_millis(150)).await;
    child.kill(); // SIGKILL
    let partial = count(
        &url,
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions",
    )
    .await;
    assert!(
        partial < total,
        "finished before it was killed; use more events"
    );

    let mut child = spawn();
    wait_caught_up(
        &url,
        projections::order_search::NAME,
        projections::order_search::VERSION,
        &fixture.ends,
    )
    .await;
    assert!(child.terminate().success(), "graceful stop failed");

    let reference = dump(&orders_alias(&fixture, "ref_"), "order_id").await;
    assert_eq!(reference.len(), 300);
    assert_eq!(
        dump(&orders_alias(&fixture, "run_"), "order_id").await,
        reference
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elasticsearch_outage_is_retried_without_losing_documents() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(8, 40);
    let (before, during) = events.split_at(events.len() / 3);
    fixture.produce_all(before).await;
    let upstream = common::search::es_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let proxy = common::proxy::Proxy::start(upstream).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.search_config(&url, "");
    config.elasticsearch_url = Some(format!("http://{}", proxy.addr));
    config.batch_max_events = Some(5);
    let name = format!("{}order_search", fixture.prefix);
    let projection = Renamed {
        name: name.clone(),
        version: 1,
        inner: OrderSearchProjection::new().unwrap(),
    };
    let running = start_search(config, projection);
    wait_caught_up(&url, &name, 1, &fixture.ends).await;

    proxy.cut();
    fixture.produce_all(during).await;
    // the outage is observed (a batch failed and is being retried), not merely waited out
    common::wait_for_sink_retry(&name).await;
    let stuck = count(
        &url,
        "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions",
    )
    .await;
    assert!(
        stuck < fixture.ends.values().sum::<i64>(),
        "positions moved while elasticsearch was down"
    );
    proxy.restore();

    wait_caught_up(&url, &name, 1, &fixture.ends).await;
    running.stop().await;
    let docs = dump(&orders_alias(&fixture, ""), "order_id").await;
    assert_eq!(docs.len(), 40);
    let reference_url = project_once(&fixture, OrderSearchProjection::new().unwrap(), "ref_").await;
    let _ = reference_url;
    assert_eq!(
        docs,
        dump(&orders_alias(&fixture, "ref_"), "order_id").await
    );
    let metrics = factline_projectors::telemetry::prometheus().render();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("factline_projector_retries_total")
                && l.contains(&format!("projector=\"{name}\""))
                && l.contains("stage=\"sink\"")),
        "the outage was not observed:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_swaps_the_alias_while_queries_keep_answering() {
    let mut fixture = Fixture::new(2).await;
    let events = dataset::shop(5, 20);
    fixture.produce_all(&events).await;
    let (_, url) = fresh_schema().await;
    let name = "event_index";
    let version = |v: u32| Renamed {
        name: name.to_owned(),
        version: v,
        inner: EventIndexProjection::new().unwrap(),
    };
    let alias = events_alias(&fixture, "");
    let v1_index = format!("{alias}_v1");
    let v2_index = format!("{alias}_v2");

    let v1 = start_search(fixture.search_config(&url, ""), version(1));
    wait_caught_up(&url, name, 1, &fixture.ends).await;
    assert_eq!(alias_targets(&alias).await, vec![v1_index.clone()]);

    // A reader queries the alias without pause from before v2 starts until it has been
    // answered by v2's index: every answer across the swap must be a non-empty count. It
    // reports which index answered (a hit's `_index`), so the test waits for conditions (an
    // answer from v1, then one from v2), never for an amount of work in a time window.
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(String::new());
    let reader = {
        let (alias, v2_index) = (alias.clone(), v2_index.clone());
        tokio::spawn(async move {
            let (mut answered_by, mut failures) = (Vec::<String>::new(), Vec::new());
            let deadline = std::time::Instant::now() + Duration::from_secs(180);
            loop {
                let (status, body) = common::search::es(
                    reqwest::Method::POST,
                    &format!("{alias}/_search"),
                    Some(json!({"query": {"term": {"event_type": "OrderPlaced"}}, "size": 1})),
                )
                .await;
                let index = body["hits"]["hits"][0]["_index"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                match body["hits"]["total"]["value"].as_i64() {
                    Some(n) if status == 200 && n > 0 && !index.is_empty() => {
                        if answered_by.last() != Some(&index) {
                            answered_by.push(index.clone());
                        }
                        let _ = seen_tx.send(index.clone());
                    }
                    _ => failures.push(format!("{status}: {body}")),
                }
                if index == v2_index || std::time::Instant::now() > deadline {
                    return (answered_by, failures);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // v2 starts only once the reader has been answered (by v1)
    tokio::time::timeout(
        Duration::from_secs(60),
        seen_rx.wait_for(|index| !index.is_empty()),
    )
    .await
    .expect("the reader got no answer")
    .unwrap();

    let v2 = start_search(fixture.search_config(&url, ""), version(2));
    fixture
        .produce(&registered("c-extra", "x@example.com", 7000))
        .await;
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(alias_targets(&alias).await, vec![v2_index.clone()]);
    let (answered_by, failures) = reader.await.unwrap();
    assert!(
        failures.is_empty(),
        "queries failed during the rebuild: {failures:?}"
    );
    assert_eq!(
        answered_by,
        vec![v1_index.clone(), v2_index.clone()],
        "the reader was not answered by v1, then by v2 only"
    );

    // the retired version stops by itself and its index is gone
    v1.stop().await;
    assert!(
        !index_exists(&v1_index).await,
        "the old index was not removed"
    );
    assert_eq!(dump(&alias, "event_id").await.len(), events.len() + 1);
    let rows = common::dump(
        &url,
        "SELECT version, state, sink, read_models, events_done = events_total AS done, \
         events_total, progress_at IS NOT NULL AS progressed FROM factline_projector_rebuilds ORDER BY version",
    )
    .await;
    let total: i64 = fixture.ends.values().sum();
    assert_eq!(
        rows,
        vec![
            format!(
                r#"{{"version":1,"state":"retired","sink":"elasticsearch","read_models":["{alias}"],"done":null,"events_total":null,"progressed":false}}"#
            ),
            format!(
                r#"{{"version":2,"state":"live","sink":"elasticsearch","read_models":["{alias}"],"done":true,"events_total":{total},"progressed":true}}"#
            ),
        ]
    );
    v2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_declarative_binary_runs_an_elasticsearch_config() {
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
    let (_, url) = fresh_schema().await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/customer_search.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_factline-projector"))
        .args(["--config", config])
        .env("KAFKA_BROKERS", &fixture.brokers)
        .env("SCHEMA_REGISTRY_URL", &fixture.registry)
        .env("DATABASE_URL", &url)
        .env("ELASTICSEARCH_URL", common::search::es_url())
        .env("PROJECTOR_TOPIC_PREFIX", &fixture.prefix)
        .env("RUST_LOG", "warn")
        .spawn()
        .map(|child| Service { child })
        .unwrap();
    let customers: HashMap<(String, i32), i64> = fixture
        .ends
        .iter()
        .filter(|((t, _), _)| *t == fixture.topic("customers"))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    wait_caught_up(&url, "customer_search", 1, &customers).await;
    assert!(child.terminate().success(), "graceful stop failed");

    let alias = format!("{}customer_search", fixture.prefix);
    let docs: Vec<Value> = dump(&alias, "customer_id")
        .await
        .into_iter()
        .map(|(_, d)| json!([d["customer_id"], d["name"], d["email"], d["forgotten"]]))
        .collect();
    assert_eq!(
        docs,
        vec![
            json!(["c-1", "Name c-1", "b@x", false]),
            json!(["c-2", "Name c-2", "early@x", false]),
            json!(["c-3", null, null, true]),
            json!(["c-4", null, null, true]),
        ]
    );
    let found = ids(
        &alias,
        json!({"match": {"name": {"query": "c-2", "operator": "and"}}}),
        "customer_id",
    )
    .await;
    assert_eq!(found, vec!["c-2"]);
}

/// `order_search`, except that the first time it applies an event it lets "another instance"
/// write the same document first (an `OrderDelivered` it applied), so the projector's
/// conditional write meets a 409 and must re-read and re-apply.
#[derive(Clone)]
struct Interfering {
    index: String,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SearchProjection for Interfering {
    fn name(&self) -> &str {
        projections::order_search::NAME
    }
    fn version(&self) -> u32 {
        projections::order_search::VERSION
    }
    fn topics(&self) -> Vec<String> {
        OrderSearchProjection::new().unwrap().topics()
    }
    fn event_types(&self) -> Vec<String> {
        OrderSearchProjection::new().unwrap().event_types()
    }
    fn indices(&self) -> Vec<factline_projectors::search::IndexSpec> {
        OrderSearchProjection::new().unwrap().indices()
    }
    fn targets(
        &self,
        event: &factline_projectors::Event,
    ) -> Result<Vec<factline_projectors::search::DocRef>, factline_projectors::ProjectionError>
    {
        OrderSearchProjection::new().unwrap().targets(event)
    }
    fn apply(
        &self,
        doc: &factline_projectors::search::DocRef,
        current: Option<Value>,
        event: &factline_projectors::Event,
    ) -> Result<Option<Value>, factline_projectors::ProjectionError> {
        if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let delivered =
                factline_projectors::projections::order_summary::OrderEvent::Delivered {
                    order_id: doc.id.clone(),
                    delivered_at: dataset::at(30),
                };
            let other =
                projections::order_search::merge_order(None, &delivered, dataset::at(30), &[]);
            let other = factline_projectors::search::applied::with_applied(
                other,
                "other-instance",
                dataset::at(30),
            );
            let path = format!("{}/_doc/{}", self.index, doc.id);
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let (status, body) =
                        common::search::es(reqwest::Method::PUT, &path, Some(other)).await;
                    assert!(status < 300, "{body}");
                })
            });
        }
        OrderSearchProjection::new()
            .unwrap()
            .apply(doc, current, event)
    }
    fn join(&self) -> Option<factline_projectors::search::Join> {
        OrderSearchProjection::new().unwrap().join()
    }
    fn enrich(&self, doc: Value, side: Option<&Value>) -> Value {
        OrderSearchProjection::new().unwrap().enrich(doc, side)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_write_is_detected_and_merged_not_overwritten() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&placed("o-1", "c-1", 2, 450, 10)).await;
    fixture.produce(&shipped("o-1", "T1", 20)).await;
    let projection = Interfering {
        index: format!("{}order_search_v1", fixture.prefix),
        done: Default::default(),
    };
    let url = project_once(&fixture, projection, "").await;
    let docs = dump(&orders_alias(&fixture, ""), "order_id").await;
    assert_eq!(docs.len(), 1);
    let o1 = &docs[0].1;
    // both the other instance's delivery and our placement and shipment survive
    assert_eq!(o1["status"], "delivered");
    assert_eq!(o1["total_cents"], 900);
    assert_eq!(o1["tracking_id"], "T1");
    assert_eq!(o1["factline"]["applied"].as_array().unwrap().len(), 3);
    assert_eq!(
        count(
            &url,
            "SELECT COALESCE(sum(next_offset), 0)::bigint FROM factline_projector_positions"
        )
        .await,
        2
    );
}

/// A declarative search projection that deletes a customer's document when forgotten.
fn deleting_config() -> factline_projectors::declarative::DeclarativeConfig {
    factline_projectors::declarative::DeclarativeConfig::parse(
        r#"
name = "deleting"
version = 1
topics = ["customers"]
sink = "elasticsearch"

[[indices]]
name = "deleting"
id = "customer_id"
[indices.fields]
customer_id = "keyword"
email = "keyword"

[[on]]
event_type = "CustomerRegistered"
index = "deleting"
action = "upsert"
set = { customer_id = "customer_id", email = "email" }

[[on]]
event_type = "CustomerForgotten"
index = "deleting"
action = "delete"
key = { customer_id = "customer_id" }
"#,
    )
    .unwrap()
}

/// Upsert, delete, then the upsert's event delivered again at a new offset (a producer retry):
/// the document stays deleted, and readers never see what remembers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_document_stays_deleted_when_an_older_event_is_delivered_again() {
    let mut fixture = Fixture::new(1).await;
    let registration = registered("c-1", "a@x", 1);
    fixture.produce(&registration).await;
    fixture.produce(&registered("c-2", "b@x", 2)).await;
    fixture.produce(&forgotten("c-1", 5)).await;
    let (_, url) = fresh_schema().await;
    let projection =
        factline_projectors::declarative::DeclarativeSearchProjection::new(deleting_config());
    let running = start_search(fixture.search_config(&url, ""), projection);
    wait_caught_up(&url, "deleting", 1, &fixture.ends).await;
    let alias = format!("{}deleting", fixture.prefix);
    let ids = |docs: Vec<(String, Value)>| docs.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(ids(dump(&alias, "customer_id").await), vec!["c-2"]);

    // the same registration again, in a later batch
    fixture.produce(&registration).await;
    wait_caught_up(&url, "deleting", 1, &fixture.ends).await;
    running.stop().await;
    assert_eq!(ids(dump(&alias, "customer_id").await), vec!["c-2"]);
    let (_, body) = common::search::es(
        reqwest::Method::POST,
        &format!("{alias}/_search"),
        Some(json!({"query": {"match_all": {}}})),
    )
    .await;
    assert_eq!(body["hits"]["total"]["value"], 1, "{body}");
}

/// A `_bulk` request refused as too large (413) is split, the documents that fit are
/// written, and the one document too large on its own is dead-lettered: the projector moves
/// on instead of retrying the request forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_refused_as_too_large_is_split_and_the_oversized_document_dead_lettered() {
    let mut fixture = Fixture::new(1).await;
    let mut events = Vec::new();
    for i in 0..20 {
        events.push(placed(&format!("o-{i}"), "c-1", 1, 100, i));
    }
    let mut huge = placed("o-huge", "c-1", 1, 100, 50);
    huge.body["items"][0]["name"] = json!("x".repeat(300_000));
    events.insert(10, huge);
    fixture.produce_all(&events).await;
    let proxy = common::search::BulkLimitProxy::start(200_000).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.search_config(&url, "");
    config.elasticsearch_url = Some(proxy.url.clone());
    let running = start_search(config, OrderSearchProjection::new().unwrap());
    wait_caught_up(
        &url,
        projections::order_search::NAME,
        projections::order_search::VERSION,
        &fixture.ends,
    )
    .await;
    running.stop().await;

    let docs = dump(&orders_alias(&fixture, ""), "order_id").await;
    assert_eq!(docs.len(), 20);
    assert!(docs.iter().all(|(id, _)| id != "o-huge"));
    let letters = common::dump(
        &url,
        "SELECT \"offset\", error LIKE '%413%' AS too_large FROM factline_projector_dead_letters",
    )
    .await;
    assert_eq!(letters, vec![r#"{"offset":10,"too_large":true}"#]);
}

/// A customer with more orders than one page: a change of the customer reaches every order,
/// written in bounded `_bulk` requests (the fan-out is paged, never loaded and sent at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_change_reaches_many_orders_in_bounded_bulks() {
    let mut fixture = Fixture::new(2).await;
    let mut events = vec![registered("c-1", "old@x", 0)];
    for i in 0..700 {
        events.push(placed(&format!("o-{i:04}"), "c-1", 1, 100, i + 1));
    }
    fixture.produce_all(&events).await;
    let proxy = common::search::BulkLimitProxy::start(usize::MAX).await;
    let (_, url) = fresh_schema().await;
    let mut config = fixture.search_config(&url, "");
    config.elasticsearch_url = Some(proxy.url.clone());
    let running = start_search(config, OrderSearchProjection::new().unwrap());
    wait_caught_up(
        &url,
        projections::order_search::NAME,
        projections::order_search::VERSION,
        &fixture.ends,
    )
    .await;

    proxy.reset();
    fixture.produce(&email_changed("c-1", "new@x", 5000)).await;
    wait_caught_up(
        &url,
        projections::order_search::NAME,
        projections::order_search::VERSION,
        &fixture.ends,
    )
    .await;
    running.stop().await;
    let docs = dump(&orders_alias(&fixture, ""), "order_id").await;
    assert_eq!(docs.len(), 700);
    assert!(docs.iter().all(|(_, d)| d["customer_email"] == "new@x"));
    let max = proxy.max_bulk_ops();
    assert!(
        (1..=500).contains(&max),
        "the fan-out was written in a bulk of {max} operations"
    );
}

/// A document changed by many events keeps only the newest applied ids (bounded), and stays
/// right: the newest email wins, and a re-delivered recent event changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_keeps_a_bounded_list_of_applied_ids() {
    let mut fixture = Fixture::new(1).await;
    fixture.produce(&registered("c-1", "r@x", 0)).await;
    let changes: Vec<_> = (1..=100)
        .map(|t| email_changed("c-1", &format!("e{t}@x"), t))
        .collect();
    fixture.produce_all(&changes).await;
    let mut copy = changes[99].clone();
    copy.body["email"] = json!("not-applied@x");
    fixture.produce(&copy).await; // same event id, other content, at a new offset
    project_once(&fixture, OrderSearchProjection::new().unwrap(), "").await;
    let customers = format!("{}order_search_customers_v1", fixture.prefix);
    let docs = dump(&customers, "customer_id").await;
    let doc = source(&docs, "c-1");
    assert_eq!(doc["email"], "e100@x");
    let applied = doc["factline"]["applied"].as_array().unwrap();
    assert_eq!(
        applied.len(),
        factline_projectors::search::applied::APPLIED_MAX
    );
    assert!(applied
        .last()
        .and_then(Value::as_str)
        .is_some_and(|e| e.ends_with(&changes[99].event_id.to_string())));
}
