//! Kafka topics of the catalog: every event topic and its dead-letter companion `<topic>.dlq`,
//! created through the admin API, idempotently. Also the librdkafka client configuration every
//! factline tool shares (`KAFKA_PROPERTY_<NAME>` environment variables).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use std::time::Duration;

/// The dead-letter topic of `topic`.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// librdkafka properties from `KAFKA_PROPERTY_<NAME>` variables of `vars`: the name lower-cased
/// with underscores as dots (`KAFKA_PROPERTY_SECURITY_PROTOCOL=SSL` -> `security.protocol=SSL`).
pub fn kafka_properties_from(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut properties: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("KAFKA_PROPERTY_")?;
            (!name.is_empty()).then(|| (name.to_lowercase().replace('_', "."), value))
        })
        .collect();
    properties.sort();
    properties
}

/// A client configuration for `brokers` plus every `KAFKA_PROPERTY_*` of the environment.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in kafka_properties_from(std::env::vars()) {
        config.set(name, value);
    }
    config
}

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created.
    Created,
    /// The topic already existed (left as it is).
    AlreadyExists,
}

/// Why topics could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The admin client could not be created or the request failed as a whole.
    #[error("kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    /// The broker refused one topic.
    #[error("cannot create topic {topic}: {code}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
}

/// Each topic and its dead-letter companion, in order: `orders`, `orders.dlq`, ...
pub fn with_dead_letter_topics(topics: &[String]) -> Vec<String> {
    topics
        .iter()
        .flat_map(|t| [t.clone(), dlq_topic(t)])
        .collect()
}

/// Creates `topics` with `partitions` partitions, replication factor `replication_factor`,
/// `retention.ms=-1` and `cleanup.policy=delete` (the log is kept forever). Topics that exist
/// already are left alone and reported as such.
pub async fn create_topics(
    config: &ClientConfig,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
) -> Result<Vec<(String, TopicOutcome)>, TopicsError> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            )
            .set("retention.ms", "-1")
            .set("cleanup.policy", "delete")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(topic) => outcomes.push((topic, TopicOutcome::Created)),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((topic, TopicOutcome::AlreadyExists))
            }
            Err((topic, code)) => return Err(TopicsError::Topic { topic, code }),
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_map_names() {
        let vars = vec![
            (
                "KAFKA_PROPERTY_SECURITY_PROTOCOL".to_string(),
                "SSL".to_string(),
            ),
            ("KAFKA_PROPERTY_CLIENT_ID".to_string(), "x".to_string()),
            ("KAFKA_BROKERS".to_string(), "b:9092".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        assert_eq!(
            kafka_properties_from(vars),
            vec![
                ("client.id".to_string(), "x".to_string()),
                ("security.protocol".to_string(), "SSL".to_string()),
            ]
        );
    }

    #[test]
    fn every_topic_gets_a_dead_letter_companion() {
        assert_eq!(
            with_dead_letter_topics(&["orders".to_string()]),
            vec!["orders".to_string(), "orders.dlq".to_string()]
        );
    }
}
