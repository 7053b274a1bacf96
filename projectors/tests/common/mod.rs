//! Shared fixtures of the projector suites: the compliance harness every projection is run
//! through (`harness`), unique topics per test, a producer writing envelope-headed Avro
//! records, an in-process projector handle, waits on the positions table and on metrics,
//! read-model dumps, sample events (`dataset`), Elasticsearch helpers (`search`) and a TCP
//! proxy for outages (`proxy`). What is not projector-specific (the stack's environment,
//! schemas, names, waits, child processes) comes from `factline-testkit`.
// Each test file uses part of these helpers; the `compliance!` macro only where a harness runs.
#![allow(
    dead_code,
    unused_macros,
    unused_imports,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod archive;
pub mod dataset;
pub mod harness;
pub mod proxy;
pub mod search;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use factline_projectors::{Config, Projection};
use factline_schemas::{json_to_avro, Catalog, Envelope, EventCodec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use factline_testkit::{connect, env, fresh_schema};

/// One test's world: its own topics (via a prefix) and helpers.
pub struct Fixture {
    pub prefix: String,
    pub brokers: String,
    pub registry: String,
    pub producer: FutureProducer,
    pub codec: EventCodec,
    /// next offset produced per (topic, partition), for waits
    pub ends: HashMap<(String, i32), i64>,
}

impl Fixture {
    /// Creates `orders` and `customers` (and their `.dlq`) under a fresh prefix.
    pub async fn new(partitions: i32) -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,librdkafka=error".into()),
            )
            .with_test_writer()
            .try_init();
        let brokers = env("KAFKA_BROKERS");
        let registry = env("SCHEMA_REGISTRY_URL");
        let prefix = format!("t{}_", factline_testkit::short_id(12));
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let names: Vec<(String, i32)> = ["orders", "customers"]
            .iter()
            .flat_map(|t| {
                [
                    (format!("{prefix}{t}"), partitions),
                    (format!("{prefix}{t}.dlq"), 1),
                ]
            })
            .collect();
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        for result in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap()
        {
            result.unwrap();
        }
        // compressed as other clients may (the write side uses lz4): the projectors read
        // zstd record batches
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "zstd")
            .create()
            .unwrap();
        Fixture {
            prefix,
            codec: EventCodec::new(&registry),
            brokers,
            registry,
            producer,
            ends: HashMap::new(),
        }
    }

    /// The produced ends of the topics a projection consumes.
    pub fn ends_for<P: Projection>(&self, projection: &P) -> HashMap<(String, i32), i64> {
        let topics: Vec<String> = projection.topics().iter().map(|t| self.topic(t)).collect();
        self.ends
            .iter()
            .filter(|((t, _), _)| topics.contains(t))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    /// A consumer of the dead-letter topic of `logical` (`{prefix}{logical}.dlq`), from its
    /// beginning.
    pub fn dead_letter_reader(&self, logical: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}dlq-reader", self.prefix))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer
            .subscribe(&[&self.topic(&format!("{logical}.dlq"))])
            .unwrap();
        consumer
    }

    /// A projector configuration for this fixture and a database URL.
    pub fn config(&self, database_url: &str) -> Config {
        let mut config = Config::new(&self.brokers, &self.registry, database_url);
        config.topic_prefix = self.prefix.clone();
        // history past retention is read from the local stack's bucket (the manifest, in the
        // projector's database, names the objects)
        config.archive = Some(factline_projectors::archive::ArchiveConfig {
            bucket: archive::test_bucket(),
            rules: Default::default(),
        });
        config.batch_max_events = Some(50);
        config.batch_max_wait_ms = Some(50);
        config.backoff_initial_ms = 50;
        config.backoff_max_ms = 1000;
        config
            .kafka_properties
            .insert("session.timeout.ms".into(), "6000".into());
        config
            .kafka_properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        config
    }

    /// Produces raw bytes with headers; returns (partition, offset).
    pub async fn produce_raw(
        &mut self,
        logical: &str,
        key: &str,
        payload: &[u8],
        headers: &[(&str, String)],
    ) -> (i32, i64) {
        let topic = self.topic(logical);
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_str()),
            });
        }
        let delivery = self
            .producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(payload)
                    .headers(h),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        let end = self.ends.entry((topic, delivery.partition)).or_insert(0);
        *end = (*end).max(delivery.offset + 1);
        (delivery.partition, delivery.offset)
    }

    /// Encodes an event from JSON (timestamps as RFC 3339 strings) and produces it keyed by `key`.
    pub async fn produce(&mut self, event: &TestEvent) -> (i32, i64) {
        let schema = &Catalog::builtin()
            .event(&event.event_type)
            .expect("event type in the catalog")
            .schema;
        let value = json_to_avro(schema, event.body.clone()).unwrap();
        let payload = self
            .codec
            .encode_value(&self.topic(event.topic), &event.event_type, &value)
            .await
            .unwrap();
        let headers = event.envelope().to_headers();
        let headers: Vec<(&str, String)> = headers.into_iter().collect();
        self.produce_raw(event.topic, &event.key, &payload, &headers)
            .await
    }

    pub async fn produce_all(&mut self, events: &[TestEvent]) {
        for e in events {
            self.produce(e).await;
        }
    }
}

/// An event to produce.
#[derive(Debug, Clone)]
pub struct TestEvent {
    pub topic: &'static str,
    pub key: String,
    pub event_type: String,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub body: Value,
}

impl TestEvent {
    /// The event as a projection's `apply` receives it (for tests that drive a projection in
    /// transactions of their own), at `offset` of partition 0 of its topic.
    pub fn to_event(&self, offset: i64) -> factline_projectors::Event {
        factline_projectors::Event {
            envelope: self.envelope(),
            data: self.body.clone(),
            key: Some(self.key.clone()),
            origin: factline_projectors::Origin {
                topic: self.topic.into(),
                partition: 0,
                offset,
            },
            timestamp: Some(self.occurred_at),
            headers: Default::default(),
        }
    }

    pub fn envelope(&self) -> Envelope {
        Envelope {
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            command_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, self.event_id.as_bytes()),
            correlation_id: format!("corr-{}", self.key),
            causation_id: None,
            occurred_at: self.occurred_at,
            traceparent: None,
        }
    }
}

/// A projector running in this process.
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), factline_projectors::RunError>>,
}

pub fn start<P: Projection>(config: Config, projection: P) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(factline_projectors::run(config, projection, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

/// Any sink running in this process.
pub fn start_sink<K: factline_projectors::Sink>(config: Config, sink: K) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(factline_projectors::run_sink(config, sink, async move {
        let _ = rx.await;
    }));
    Running {
        stop: Some(tx),
        handle,
    }
}

/// A search projector running in this process.
pub fn start_search<P: factline_projectors::SearchProjection>(
    config: Config,
    projection: P,
) -> Running {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(factline_projectors::run_search(
        config,
        projection,
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        stop: Some(tx),
        handle,
    }
}

impl Running {
    /// Graceful stop; the run must end cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("projector did not stop")
            .unwrap()
            .unwrap();
    }
}

/// Waits until the projector's positions reach every end produced so far.
pub async fn wait_caught_up(
    url: &str,
    projector: &str,
    version: u32,
    ends: &HashMap<(String, i32), i64>,
) {
    let client = connect(url).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = client
            .query(
                "SELECT topic, partition, next_offset FROM factline_projector_positions \
                 WHERE projector = $1 AND version = $2",
                &[&projector, &(version as i32)],
            )
            .await
            .unwrap_or_default();
        let stored: HashMap<(String, i32), i64> = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let missing: Vec<_> = ends
            .iter()
            .filter(|(tp, end)| stored.get(*tp).is_none_or(|n| n < *end))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{projector} did not catch up: missing {missing:?}, stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row of a query as JSON text, in the query's order.
pub async fn dump(url: &str, query: &str) -> Vec<String> {
    factline_testkit::postgres::rows_as_json(url, query).await
}

/// Runs `projection` until it stops by itself, as it must when it refuses to go on, and
/// returns its error; panics after 120 s (`why` says what should have stopped it).
pub async fn run_until_refused<P: Projection>(
    config: Config,
    projection: P,
    why: &str,
) -> factline_projectors::RunError {
    tokio::time::timeout(
        Duration::from_secs(120),
        factline_projectors::run(config, projection, std::future::pending()),
    )
    .await
    .unwrap_or_else(|_| panic!("the projector did not stop: {why}"))
    .expect_err("the projector stopped without an error")
}

/// A count.
pub async fn count(url: &str, query: &str) -> i64 {
    factline_testkit::postgres::count(url, query).await
}

/// Waits until the projector `name` has retried because its sink is unreachable: a batch at
/// the sink stage, or its instance slot (membership), whose lock connection to PostgreSQL is
/// often the first to notice a PostgreSQL outage.
pub async fn wait_for_sink_retry(name: &str) {
    wait_for_retry_at(name, &["sink", "membership"]).await;
}

/// Waits until the projector `name` has retried at `stage` at least once (its
/// `factline_projector_retries_total{stage}` counter exists in this process).
pub async fn wait_for_retry(name: &str, stage: &str) {
    wait_for_retry_at(name, &[stage]).await;
}

/// Waits until the projector `name` has retried at one of `stages`.
async fn wait_for_retry_at(name: &str, stages: &[&str]) {
    let projector = format!("projector=\"{name}\"");
    let stages: Vec<String> = stages.iter().map(|s| format!("stage=\"{s}\"")).collect();
    factline_testkit::eventually(
        &format!("{name} to retry at {}", stages.join(" or ")),
        Duration::from_secs(120),
        || {
            let metrics = factline_projectors::telemetry::prometheus().render();
            let retried = metrics.lines().any(|l| {
                l.starts_with("factline_projector_retries_total")
                    && l.contains(&projector)
                    && stages.iter().any(|s| l.contains(s))
            });
            async move { retried.then_some(()) }
        },
    )
    .await;
}
