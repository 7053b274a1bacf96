//! The end-to-end world of the read API tests: fresh topics (prefix), a fresh PostgreSQL
//! schema, the write side, the projectors and the read API, all in this process against the
//! real servers named by the environment.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use factline_projectors::declarative::{
    DeclarativeConfig, DeclarativeProjection, DeclarativeSearchProjection,
};
use factline_projectors::projections::{
    CustomerStatsProjection, EventIndexProjection, OrderSearchProjection, OrderSummaryProjection,
};
use factline_schemas::Catalog;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use factline_testkit::env;
pub use factline_testkit::samples::{customer, order};
pub use factline_testkit::unique;

/// The local stack's archive bucket (`ARCHIVE_S3_ENDPOINT`, `ARCHIVE_S3_BUCKET`), under a
/// key prefix of the test's own (`<ARCHIVE_S3_PREFIX><topic prefix>/`).
pub fn archive_config(prefix: &str) -> factline_projectors::archive::ArchiveConfig {
    let mut bucket = factline_archive::BucketConfig::local(
        &env("ARCHIVE_S3_ENDPOINT"),
        &env("ARCHIVE_S3_BUCKET"),
    );
    bucket.prefix = format!(
        "{}{prefix}/",
        std::env::var("ARCHIVE_S3_PREFIX").unwrap_or_default()
    );
    factline_projectors::archive::ArchiveConfig {
        bucket,
        rules: factline_archive::CutRules::default(),
    }
}

/// Something running in this process that stops when asked.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Runs what `make` returns until the receiver it is given fires.
    pub fn spawn<F>(make: impl FnOnce(oneshot::Receiver<()>) -> F) -> Running
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel();
        Running {
            stop: Some(stop),
            task: tokio::spawn(make(stopped)),
        }
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

/// Which projectors a test needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Projector {
    OrderSummary,
    CustomerStats,
    OrderSearch,
    EventIndex,
    CustomerDirectory,
    CustomerSearch,
    /// The archiver, writing under the bucket prefix of [`archive_config`].
    EventArchive,
}

impl Projector {
    /// Every sample projector.
    pub const ALL: [Projector; 6] = [
        Projector::OrderSummary,
        Projector::CustomerStats,
        Projector::OrderSearch,
        Projector::EventIndex,
        Projector::CustomerDirectory,
        Projector::CustomerSearch,
    ];
}

/// One test's whole system.
pub struct World {
    pub prefix: String,
    pub database_url: String,
    /// The index prefix projectors started from now on write to (the topic prefix at first).
    pub projector_index_prefix: String,
    pub write: String,
    pub read: String,
    pub http: reqwest::Client,
    pub projectors: HashMap<&'static str, Running>,
    write_side: Running,
    read_api: Running,
}

impl World {
    /// Starts everything; `configure` adjusts the read API's configuration.
    pub async fn start(
        projectors: &[Projector],
        configure: impl FnOnce(&mut factline_read_api::Config),
    ) -> World {
        let prefix = factline_testkit::names::topic_prefix();
        create_topics(&prefix).await;
        let (_, database_url) = factline_testkit::fresh_schema().await;

        let mut write_config = factline_write_side::Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            kafka_brokers: env("KAFKA_BROKERS"),
            schema_registry_url: env("SCHEMA_REGISTRY_URL"),
            topic_prefix: prefix.clone(),
            database_url: env("DATABASE_URL"),
            keys: keys(),
            ..factline_write_side::Config::default()
        };
        write_config.kafka_properties =
            factline_schemas::topics::kafka_properties_from(std::env::vars());
        let server = factline_write_side::Server::bind(write_config)
            .await
            .unwrap();
        let write = format!("http://{}", server.local_addr().unwrap());
        let write_side = Running::spawn(|stopped| async move {
            let _ = server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await;
        });

        let mut read_config = factline_read_api::Config::new(
            &database_url,
            &env("ELASTICSEARCH_URL"),
            &env("KAFKA_BROKERS"),
        );
        read_config.addr = SocketAddr::from(([127, 0, 0, 1], 0));
        read_config.topic_prefix = prefix.clone();
        read_config.index_prefix = prefix.clone();
        read_config.consistency_timeout = Duration::from_secs(20);
        configure(&mut read_config);
        let server = factline_read_api::Server::bind(read_config).await.unwrap();
        let read = format!("http://{}", server.local_addr().unwrap());
        let read_api = Running::spawn(|stopped| async move {
            let _ = server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await;
        });

        let mut world = World {
            projector_index_prefix: prefix.clone(),
            prefix,
            database_url,
            write,
            read,
            http: reqwest::Client::new(),
            projectors: HashMap::new(),
            write_side,
            read_api,
        };
        for p in projectors {
            world.start_projector(*p);
        }
        world
    }

    /// The configuration the world's projectors run with (its topics, schema and indices).
    pub fn projector_config(&self) -> factline_projectors::Config {
        let mut config = factline_projectors::Config::new(
            &env("KAFKA_BROKERS"),
            &env("SCHEMA_REGISTRY_URL"),
            &self.database_url,
        );
        config.topic_prefix = self.prefix.clone();
        config.index_prefix = Some(self.projector_index_prefix.clone());
        config.keys = keys();
        config.elasticsearch_url = Some(env("ELASTICSEARCH_URL"));
        // history past retention is read from the local stack's bucket
        config.archive = Some(archive_config(&self.prefix));
        config.batch_max_events = Some(200);
        config.batch_max_wait_ms = Some(20);
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

    /// Starts one projector (again).
    pub fn start_projector(&mut self, projector: Projector) {
        let config = self.projector_config();
        let (name, running) = match projector {
            Projector::OrderSummary => (
                "order_summary",
                Running::spawn(|s| async move {
                    let _ = factline_projectors::run(config, OrderSummaryProjection, async move {
                        let _ = s.await;
                    })
                    .await;
                }),
            ),
            Projector::CustomerStats => (
                "customer_stats",
                Running::spawn(|s| async move {
                    let _ = factline_projectors::run(config, CustomerStatsProjection, async move {
                        let _ = s.await;
                    })
                    .await;
                }),
            ),
            Projector::OrderSearch => (
                "order_search",
                Running::spawn(|s| async move {
                    let _ = factline_projectors::run_search(
                        config,
                        OrderSearchProjection::new().unwrap(),
                        async move {
                            let _ = s.await;
                        },
                    )
                    .await;
                }),
            ),
            Projector::EventIndex => (
                "event_index",
                Running::spawn(|s| async move {
                    let _ = factline_projectors::run_search(
                        config,
                        EventIndexProjection::new().unwrap(),
                        async move {
                            let _ = s.await;
                        },
                    )
                    .await;
                }),
            ),
            Projector::CustomerSearch => {
                let file = DeclarativeConfig::parse(include_str!(
                    "../../../projectors/config/customer_search.toml"
                ))
                .unwrap();
                (
                    "customer_search",
                    Running::spawn(|s| async move {
                        let _ = factline_projectors::run_search(
                            config,
                            DeclarativeSearchProjection::new(file),
                            async move {
                                let _ = s.await;
                            },
                        )
                        .await;
                    }),
                )
            }
            Projector::CustomerDirectory => {
                let file = DeclarativeConfig::parse(include_str!(
                    "../../../projectors/config/customer_directory.toml"
                ))
                .unwrap();
                (
                    "customer_directory",
                    Running::spawn(|s| async move {
                        let _ = factline_projectors::run(
                            config,
                            DeclarativeProjection::new(file),
                            async move {
                                let _ = s.await;
                            },
                        )
                        .await;
                    }),
                )
            }
            Projector::EventArchive => {
                (
                    "event_archive",
                    Running::spawn(|s| async move {
                        // the archive is `config.archive`, this world's prefix of the bucket
                        let _ = factline_projectors::archive::run_archive(config, async move {
                            let _ = s.await;
                        })
                        .await;
                    }),
                )
            }
        };
        self.projectors.insert(name, running);
    }

    /// Stops one projector.
    pub async fn stop_projector(&mut self, name: &str) {
        if let Some(running) = self.projectors.remove(name) {
            running.stop().await;
        }
    }

    /// Stops everything.
    pub async fn stop(mut self) {
        for (_, running) in self.projectors.drain() {
            running.stop().await;
        }
        self.read_api.stop().await;
        self.write_side.stop().await;
    }

    /// Sends a command; returns the 202 answer.
    pub async fn command(&self, name: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/commands/{name}", self.write))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 202, "{name}: {answer}");
        answer
    }

    /// GET on the read API: status, headers, JSON body.
    pub async fn get(&self, path_and_query: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let response = self
            .http
            .get(format!("{}{path_and_query}", self.read))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    /// Polls `path` until `done` holds (at most 60 s).
    pub async fn eventually(
        &self,
        path: &str,
        done: impl Fn(u16, &Value) -> bool,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.eventually_with(path, |status, _, body| done(status, body))
            .await
    }

    /// Polls `path` until `done` holds for its status, headers and body (at most 60 s).
    pub async fn eventually_with(
        &self,
        path: &str,
        done: impl Fn(u16, &reqwest::header::HeaderMap, &Value) -> bool,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, headers, body) = self.get(path).await;
            if done(status, &headers, &body) {
                return (status, headers, body);
            }
            assert!(
                Instant::now() < deadline,
                "{path} never matched; last: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The freshness headers every answer from a projection carries.
pub const FRESHNESS: [&str; 4] = [
    "factline-projection",
    "factline-position",
    "factline-lag-events",
    "factline-lag-seconds",
];

/// Panics unless every freshness header is there.
pub fn assert_fresh(path: &str, headers: &reqwest::header::HeaderMap) {
    for name in FRESHNESS {
        assert!(headers.contains_key(name), "{path}: no {name}: {headers:?}");
    }
}

/// A header as text.
pub fn header(headers: &reqwest::header::HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The key store every service of a world shares: `FACTLINE_KEK*` when set, else the
/// repository's development KEK file, whatever directory the test runs in.
pub fn keys() -> factline_keystore::KeyConfig {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    factline_keystore::KeyConfig::from_env(&factline_service::Env::from_process())
        .expect("FACTLINE_KEK* settings")
        .with_development_file(root.join(factline_keystore::config::DEV_KEK_FILE))
}

async fn create_topics(prefix: &str) {
    let mut topics: Vec<String> = Catalog::builtin().with_topic_prefix(prefix).topics();
    let dlq: Vec<String> = topics.iter().map(|t| format!("{t}.dlq")).collect();
    topics.extend(dlq);
    let config = factline_schemas::topics::client_config(&env("KAFKA_BROKERS"));
    factline_schemas::topics::create_topics(&config, &topics, 3, 1)
        .await
        .expect("create test topics");
}

/// The `order_id` of every item of a page, in order.
pub fn order_ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["order_id"].as_str().unwrap().to_owned())
        .collect()
}
