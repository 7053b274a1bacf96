//! Erasure by crypto-shredding, end to end against the real servers: before `ForgetCustomer`
//! the customer's name, email and address are in clear in the read models (so the search
//! below works); after it, reading every topic from the beginning (dead letters included),
//! with rdkafka and with Confluent's own Python client and Avro deserializer, finds them in
//! no record, no PostgreSQL table of the test (nor the key store) and no
//! Elasticsearch index holds them, no archived object holds them, the services' logs (captured
//! at debug level, above what `make up` runs with) never held them, and rebuilding the
//! projections from the log gives the same read models.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(120);

/// Everything the services in this process log, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    /// Captures the logs of this process from now on: the factline crates at `debug` (more
    /// than the services log by default), everything else at `info`.
    fn capture() -> Logs {
        let logs = Logs::default();
        let filter = [
            "write_side",
            "projectors",
            "read_api",
            "keystore",
            "schemas",
            "service",
        ]
        .iter()
        .fold(String::from("info"), |f, c| {
            format!("{f},factline_{c}=debug")
        });
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(logs.clone())
            .init();
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every record the archiver wrote under `prefix`'s bucket prefix for `topic` (prefixed):
/// key, value and header bytes of each, decoded from the objects.
async fn read_archive(prefix: &str, topic: &str) -> Vec<Vec<u8>> {
    let config = archive_config(prefix);
    let bucket = factline_archive::Bucket::open(&config.bucket).unwrap();
    let mut records = Vec::new();
    for partition in 0..16 {
        for key in bucket.list_partition(topic, partition).await.unwrap() {
            let bytes = bucket.get(&key).await.unwrap();
            let (_, archived) = factline_archive::ArchiveObject::decode(&bytes).unwrap();
            for record in archived {
                let mut bytes = record.key.clone().unwrap_or_default();
                bytes.extend_from_slice(record.value.as_deref().unwrap_or_default());
                for (_, value) in &record.headers {
                    bytes.extend_from_slice(value.as_deref().unwrap_or_default());
                }
                records.push(bytes);
            }
        }
    }
    records
}

/// Every table of `url`'s schema (`current_schema()`), or of `schema` when given.
async fn tables(url: &str, schema: Option<&str>) -> Vec<(String, String)> {
    let client = factline_testkit::connect(url).await;
    let schema = match schema {
        Some(s) => s.to_owned(),
        None => client
            .query_one("SELECT current_schema()::text", &[])
            .await
            .unwrap()
            .get(0),
    };
    client
        .query(
            "SELECT table_schema::text, table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY table_name",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The needles found in any row of any table of the schema.
async fn found_in_postgres(url: &str, schema: Option<&str>, needles: &[&str]) -> Vec<String> {
    let client = factline_testkit::connect(url).await;
    let mut found = Vec::new();
    for (schema, table) in tables(url, schema).await {
        let rows = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM \"{schema}\".\"{table}\" t"),
                &[],
            )
            .await
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            for needle in needles {
                if text.contains(needle) {
                    found.push(format!("{table}: {needle}"));
                }
            }
        }
    }
    found
}

/// Every document of `index` (refreshed first) by id.
async fn documents(index: &str) -> BTreeMap<String, Value> {
    let http = reqwest::Client::new();
    let es = env("ELASTICSEARCH_URL");
    let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
    let body: Value = http
        .post(format!("{es}/{index}/_search"))
        .json(&json!({"size": 10000, "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["hits"]["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("{index}: {body}"))
        .iter()
        .map(|hit| {
            (
                hit["_id"].as_str().unwrap().to_owned(),
                hit["_source"].clone(),
            )
        })
        .collect()
}

/// The needles found in any document of the indices `{prefix}*`.
async fn found_in_elasticsearch(prefix: &str, needles: &[&str]) -> Vec<String> {
    let http = reqwest::Client::new();
    let es = env("ELASTICSEARCH_URL");
    let _ = http
        .post(format!("{es}/{prefix}*/_refresh"))
        .send()
        .await
        .unwrap();
    let body: Value = http
        .post(format!("{es}/{prefix}*/_search"))
        .json(&json!({"size": 1000, "query": {"match_all": {}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut found = Vec::new();
    for hit in body["hits"]["hits"].as_array().cloned().unwrap_or_default() {
        let text = hit["_source"].to_string();
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{}: {needle}", hit["_index"]));
            }
        }
    }
    found
}

/// Every record of `topic` from its beginning: key, value and header bytes.
fn read_topic(topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", env("KAFKA_BROKERS"))
        .set("group.id", factline_testkit::unique("erasure-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(30))
            .unwrap();
        if high > low {
            ends.insert(partition.id(), high);
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                .unwrap();
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return records;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !ends.is_empty() {
        assert!(std::time::Instant::now() < deadline, "{topic}: not read");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let mut bytes = message.key().unwrap_or_default().to_vec();
        bytes.extend_from_slice(message.payload().unwrap_or_default());
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                bytes.extend_from_slice(h.value.unwrap_or_default());
            }
        }
        records.push(bytes);
        if ends.get(&message.partition()) == Some(&(message.offset() + 1)) {
            ends.remove(&message.partition());
        }
    }
    records
}

/// Every record of `topics` from their beginning as Confluent's Python client and its
/// AvroDeserializer see them (`tests/erasure/confluent_read.py`), one JSON value each.
fn read_with_confluent(topics: &[&str]) -> Vec<Value> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.dev/venv/bin/python");
    let output = std::process::Command::new(&python)
        .arg(root.join("tests/erasure/confluent_read.py"))
        .arg(env("KAFKA_BROKERS"))
        .arg(env("SCHEMA_REGISTRY_URL"))
        .args(topics)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        output.status.success(),
        "confluent_read.py failed ({}); `make test` installs confluent-kafka[avro] into \
         .dev/venv: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Fails naming `place` when `text` holds any of `needles`.
fn assert_not_in_clear(place: &str, text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(!text.contains(needle), "{place}: {needle} in clear");
    }
}

/// The read models of `url`'s schema (every table but the runtime's bookkeeping), as JSON
/// rows sorted within each table.
async fn read_models(url: &str) -> BTreeMap<String, Vec<String>> {
    let client = factline_testkit::connect(url).await;
    let mut models = BTreeMap::new();
    for (schema, table) in tables(url, None).await {
        if table.starts_with("factline_") {
            continue;
        }
        let mut rows: Vec<String> = client
            .query(
                &format!("SELECT row_to_json(t)::text FROM \"{schema}\".\"{table}\" t"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        models.insert(table, rows);
    }
    models
}

const PROJECTORS: [Projector; 6] = Projector::ALL;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_forget_customer_the_personal_data_is_nowhere_and_a_rebuild_agrees() {
    let logs = Logs::capture();
    let mut world = World::start(&PROJECTORS, |_| {}).await;
    world.start_projector(Projector::EventArchive);
    let id = factline_testkit::short_id(10).to_lowercase();
    let customer = format!("c-{id}");
    let name = format!("Hedy Lamarr {id}");
    let email = format!("hedy.{id}@example.com");
    let street = format!("{id} Ringstrasse");
    let needles = [name.as_str(), email.as_str(), street.as_str()];
    world
        .command(
            "RegisterCustomer",
            json!({"customer_id": customer, "email": email, "name": name}),
        )
        .await;
    let order = world
        .command(
            "PlaceOrder",
            json!({"order_id": format!("o-{id}"), "customer_id": customer, "currency": "EUR",
                   "items": [{"sku": "tea", "name": "Earl Grey", "quantity": 1, "unit_price_cents": 450}],
                   "shipping_address": {"line1": street, "city": "Wien", "postal_code": "1010",
                                        "country": "AT"}}),
        )
        .await;

    // before: the search finds the personal data in clear in the read models
    factline_testkit::eventually("name and email in PostgreSQL", WAIT, || async {
        let found = found_in_postgres(&world.database_url, None, &needles).await;
        (found.iter().any(|f| f.ends_with(&name)) && found.iter().any(|f| f.ends_with(&email)))
            .then_some(())
    })
    .await;
    factline_testkit::eventually("the address in Elasticsearch", WAIT, || async {
        let found = found_in_elasticsearch(&world.prefix, &needles).await;
        found.iter().any(|f| f.ends_with(&street)).then_some(())
    })
    .await;
    // and never on the log: Confluent's client decodes every record and sees ciphertext
    for topic in ["customers", "orders"] {
        let topic = format!("{}{topic}", world.prefix);
        let log = read_topic(&topic);
        for record in &log {
            assert_not_in_clear(&topic, &String::from_utf8_lossy(record), &needles);
        }
        let confluent = read_with_confluent(&[&topic]);
        assert_eq!(confluent.len(), log.len(), "{topic}: {confluent:?}");
        for record in &confluent {
            assert_eq!(record["decoded"], true, "{record}");
            assert_not_in_clear(&topic, &record.to_string(), &needles);
        }
        assert!(
            confluent
                .iter()
                .any(|r| r.to_string().contains(factline_keystore::sealed::PREFIX)),
            "{topic}: no sealed field seen: {confluent:?}"
        );
    }

    let forgotten = world
        .command("ForgetCustomer", json!({"customer_id": customer}))
        .await;
    assert!(forgotten["event_id"].is_string());
    world
        .eventually(
            &format!(
                "/customers/{customer}?consistent_with={}",
                forgotten["position"].as_str().unwrap()
            ),
            |status, body| status == 200 && body.to_string().contains("forgotten"),
        )
        .await;
    let _ = order;

    // after: nowhere in any read model, the key store, or any topic (dead letters included)
    factline_testkit::eventually("no personal data in PostgreSQL", WAIT, || async {
        found_in_postgres(&world.database_url, None, &needles)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    factline_testkit::eventually("no personal data in Elasticsearch", WAIT, || async {
        found_in_elasticsearch(&world.prefix, &needles)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let keys = keys();
    assert_eq!(
        found_in_postgres(&world.database_url, Some(&keys.db_schema), &needles).await,
        Vec::<String>::new()
    );
    let topics = ["customers", "orders", "customers.dlq", "orders.dlq"]
        .map(|topic| format!("{}{topic}", world.prefix));
    let mut on_the_log = 0;
    for topic in &topics {
        for record in read_topic(topic) {
            on_the_log += 1;
            assert_not_in_clear(topic, &String::from_utf8_lossy(&record), &needles);
        }
    }
    let confluent = read_with_confluent(&topics.each_ref().map(String::as_str));
    assert_eq!(confluent.len(), on_the_log, "{confluent:?}");
    for record in &confluent {
        assert_not_in_clear("Confluent's client", &record.to_string(), &needles);
    }

    // the archive holds every record of the log, and none of them in clear
    for topic in ["customers", "orders"] {
        let topic = format!("{}{topic}", world.prefix);
        let log = read_topic(&topic);
        let archived = factline_testkit::eventually("the archive holds the log", WAIT, || async {
            let archived = read_archive(&world.prefix, &topic).await;
            (archived.len() >= log.len()).then_some(archived)
        })
        .await;
        assert_eq!(archived.len(), log.len(), "{topic}");
        for record in archived {
            assert_not_in_clear(
                &format!("archive of {topic}"),
                &String::from_utf8_lossy(&record),
                &needles,
            );
        }
    }
    world.stop_projector("event_archive").await;

    // the services logged the erasure (so the capture works), never the personal data
    let text = logs.text();
    assert!(text.contains("data key destroyed"), "{text}");
    assert!(text.contains(&customer), "{text}");
    assert_not_in_clear("logs", &text, &needles);

    // a rebuild from the beginning of the log, into a fresh schema and fresh indices, gives
    // the same read models: the erased values read as the placeholder, then forgetting
    // anonymises them exactly as it did live
    let live = read_models(&world.database_url).await;
    assert!(live.values().map(Vec::len).sum::<usize>() > 0, "{live:?}");
    let running: Vec<&str> = world.projectors.keys().copied().collect();
    for name in running {
        world.stop_projector(name).await;
    }
    let (_, rebuilt_url) = factline_testkit::fresh_schema().await;
    world.database_url = rebuilt_url.clone();
    world.projector_index_prefix = format!("{}rebuilt-", world.prefix);
    for projector in PROJECTORS {
        world.start_projector(projector);
    }
    let rebuilt = factline_testkit::eventually("the rebuild catches up", WAIT, || async {
        let rebuilt = read_models(&rebuilt_url).await;
        (rebuilt == live).then_some(rebuilt)
    })
    .await;
    assert_eq!(rebuilt, live);
    let rebuilt_prefix = world.projector_index_prefix.clone();
    factline_testkit::eventually("the rebuilt event index holds the events", WAIT, || async {
        let http = reqwest::Client::new();
        let es = env("ELASTICSEARCH_URL");
        let _ = http
            .post(format!("{es}/{rebuilt_prefix}*/_refresh"))
            .send()
            .await;
        let count: Value = http
            .get(format!("{es}/{rebuilt_prefix}*/_count"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (count["count"].as_i64().unwrap_or(0) >= 4).then_some(())
    })
    .await;
    assert_eq!(
        found_in_elasticsearch(&rebuilt_prefix, &needles).await,
        Vec::<String>::new()
    );
    // and every search read model the same, document by document
    for index in ["order_search_v1", "event_index_v1", "customer_search_v1"] {
        let live = documents(&format!("{}{index}", world.prefix)).await;
        assert!(!live.is_empty(), "{index}");
        let rebuilt = factline_testkit::eventually(index, WAIT, || async {
            let rebuilt = documents(&format!("{rebuilt_prefix}{index}")).await;
            (rebuilt == live).then_some(rebuilt)
        })
        .await;
        assert_eq!(rebuilt, live, "{index}");
    }
    assert_eq!(
        found_in_postgres(&rebuilt_url, None, &needles).await,
        Vec::<String>::new()
    );
    world.stop().await;
}
