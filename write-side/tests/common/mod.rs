//! Shared test helpers: the write side on 127.0.0.1:0 against the real broker and registry, each
//! test with its own topics (`t-<random>-customers`, `t-<random>-orders`), and readers that look
//! at what actually landed on the log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use factline_schemas::{Catalog, Envelope, EventCodec};
use factline_write_side::{Config, Server};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub use factline_testkit::env;

/// A running write side with its own topics.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The topic prefix of this app.
    pub prefix: String,
    /// An HTTP client.
    pub http: reqwest::Client,
    /// The configuration the app runs with.
    pub config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A fresh random topic prefix.
pub fn new_prefix() -> String {
    factline_testkit::names::topic_prefix()
}

/// A config for tests: real broker and registry from the environment, port 0, prefix.
pub fn test_config(prefix: &str) -> Config {
    let mut config = Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        kafka_brokers: env("KAFKA_BROKERS"),
        schema_registry_url: env("SCHEMA_REGISTRY_URL"),
        topic_prefix: prefix.to_string(),
        ..Config::default()
    };
    config.kafka_properties = factline_schemas::topics::kafka_properties_from(std::env::vars());
    config
}

/// Creates the prefixed catalog topics (3 partitions each).
pub async fn create_topics(prefix: &str) {
    let topics: Vec<String> = Catalog::builtin().with_topic_prefix(prefix).topics();
    let config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
    factline_schemas::topics::create_topics(&config, &topics, 3, 1)
        .await
        .expect("create test topics");
}

impl TestApp {
    /// Creates topics with a new prefix and starts the app, `configure` adjusting the config.
    pub async fn start(configure: impl FnOnce(&mut Config)) -> TestApp {
        let prefix = new_prefix();
        create_topics(&prefix).await;
        TestApp::start_with_prefix(&prefix, configure).await
    }

    /// Starts an app on existing topics of `prefix`.
    pub async fn start_with_prefix(prefix: &str, configure: impl FnOnce(&mut Config)) -> TestApp {
        factline_service::logging::init_with(factline_service::logging::LogFormat::Text);
        let mut config = test_config(prefix);
        configure(&mut config);
        let server = Server::bind(config.clone())
            .await
            .expect("bind the write side");
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        TestApp {
            base: format!("http://{addr}"),
            prefix: prefix.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The full topic name of a catalog topic.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// `POST /commands/{command}` with a JSON body and extra headers.
    pub async fn post(
        &self,
        command: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}/commands/{command}", self.base))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request).await
    }

    /// `POST /commands` (the batch endpoint) with a body of `content_type` and extra headers
    /// (`authorization` included).
    pub async fn post_batch(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/commands", self.base))
            .header("content-type", content_type)
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (status, _, body) = answer(request).await;
        (status, body)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A consumer with a fresh group.
pub fn consumer() -> BaseConsumer {
    let mut config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
    config
        .set("group.id", factline_testkit::unique("t"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    ClientConfig::create(&config).expect("consumer")
}

/// The sum of the high watermarks of `topic`'s partitions.
pub async fn high_watermark(topic: &str) -> i64 {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = consumer();
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        let partitions = metadata.topics()[0].partitions().len() as i32;
        assert!(partitions > 0, "topic {topic} has no partitions");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .unwrap()
                    .1
            })
            .sum()
    })
    .await
    .unwrap()
}

/// The record at (topic, partition, offset).
pub async fn read_at(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = consumer();
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&topic, partition, Offset::Offset(offset))
            .unwrap();
        consumer.assign(&list).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(result) = consumer.poll(Duration::from_millis(200)) {
                let message = result.expect("consume");
                if message.offset() == offset {
                    return message.detach();
                }
            }
        }
        panic!("no record at {topic}/{partition}@{offset}");
    })
    .await
    .unwrap()
}

/// Every record of `topic` (reads until `expected` records or the deadline).
pub async fn read_all(topic: &str, expected: usize) -> Vec<OwnedMessage> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer = consumer();
        consumer.subscribe(&[&topic]).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.len() < expected && Instant::now() < deadline {
            if let Some(result) = consumer.poll(Duration::from_millis(200)) {
                out.push(result.expect("consume").detach());
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The envelope of a record.
pub fn envelope(message: &OwnedMessage) -> Envelope {
    let headers = message.headers().expect("headers");
    let pairs: Vec<(&str, Option<&[u8]>)> = headers.iter().map(|h| (h.key, h.value)).collect();
    Envelope::from_headers(pairs).expect("envelope")
}

/// A codec for the test prefix's catalog.
pub fn codec(prefix: &str) -> EventCodec {
    EventCodec::with_catalog(
        &env("SCHEMA_REGISTRY_URL"),
        Catalog::builtin().with_topic_prefix(prefix),
    )
}

/// Sends `request`: the status, the headers and the body (JSON, or the text as a string).
async fn answer(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// The status of every item of a batch answer, in order.
pub fn statuses(answer: &Value) -> Vec<i64> {
    answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect()
}
