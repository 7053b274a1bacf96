//! Integration test of `factline-schemas create-topics` against the broker at KAFKA_BROKERS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use factline_schemas::topics::client_config;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use support::{env, unique_prefix};

fn create_topics(prefix: &str, partitions: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_factline-schemas"))
        .args([
            "create-topics",
            "--topic-prefix",
            prefix,
            "--partitions",
            partitions,
        ])
        .env("KAFKA_BROKERS", env("KAFKA_BROKERS"))
        .output()
        .unwrap()
}

#[tokio::test]
async fn creates_every_topic_and_its_dead_letter_topic_idempotently() {
    let prefix = unique_prefix("topics");
    let output = create_topics(&prefix, "3");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: Vec<String> = ["customers", "customers.dlq", "orders", "orders.dlq"]
        .iter()
        .map(|t| format!("{prefix}{t}"))
        .collect();
    for topic in &expected {
        assert!(
            stdout.contains(&format!("{topic}: created (3 partitions)")),
            "{stdout}"
        );
    }

    let consumer: BaseConsumer = client_config(&env("KAFKA_BROKERS")).create().unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    for topic in &expected {
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .unwrap_or_else(|| panic!("{topic} was not created"));
        assert_eq!(found.partitions().len(), 3, "{topic}");
    }

    // The log is kept forever.
    let admin: AdminClient<DefaultClientContext> =
        client_config(&env("KAFKA_BROKERS")).create().unwrap();
    let resources: Vec<ResourceSpecifier<'_>> = expected
        .iter()
        .map(|t| ResourceSpecifier::Topic(t))
        .collect();
    let configs = admin
        .describe_configs(&resources, &AdminOptions::new())
        .await
        .unwrap();
    for (topic, config) in expected.iter().zip(configs) {
        let config = config.unwrap();
        let value = |name: &str| config.get(name).and_then(|e| e.value.clone());
        assert_eq!(value("retention.ms").as_deref(), Some("-1"), "{topic}");
        assert_eq!(
            value("cleanup.policy").as_deref(),
            Some("delete"),
            "{topic}"
        );
    }

    // A second run is fine: the topics exist already.
    let output = create_topics(&prefix, "3");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}");
    for topic in &expected {
        assert!(
            stdout.contains(&format!("{topic}: already exists")),
            "{stdout}"
        );
    }
}

#[test]
fn rejects_zero_partitions() {
    let output = create_topics(&unique_prefix("topics0"), "0");
    assert!(!output.status.success());
}
