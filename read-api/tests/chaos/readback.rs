//! The topics as a plain consumer sees them: every acknowledged event read back (the record at
//! the partition and offset the `202` named must exist and carry the `event_id` the `202`
//! answered), and the high watermarks, to check the lag the read API reports.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::shop::Ack;

/// The high watermark of every partition of `topics`.
pub fn high_watermarks(
    brokers: &str,
    topics: &[String],
) -> Result<BTreeMap<(String, i32), i64>, String> {
    let consumer = consumer(brokers);
    let mut ends = BTreeMap::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .map_err(|e| format!("watermarks of {topic}/{}: {e}", p.id()))?;
                ends.insert((topic.clone(), p.id()), high);
            }
        }
    }
    Ok(ends)
}

fn consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("chaos-readback-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("a consumer")
}

/// The acknowledged events not found where their `202` said, one line each (empty: all found).
pub fn missing_from_topics(brokers: &str, acks: &[Ack]) -> Vec<String> {
    let mut wanted: BTreeMap<(String, i32), Vec<&Ack>> = BTreeMap::new();
    for ack in acks {
        wanted
            .entry((ack.topic.clone(), ack.partition))
            .or_default()
            .push(ack);
    }
    let consumer = consumer(brokers);
    let mut problems = Vec::new();
    for ((topic, partition), acks) in &wanted {
        let until = acks.iter().map(|a| a.offset).max().unwrap_or(0) + 1;
        let found = match read_partition(&consumer, topic, *partition, until) {
            Ok(found) => found,
            Err(e) => {
                problems.push(format!("{topic}/{partition}: {e}"));
                continue;
            }
        };
        for ack in acks {
            match found.get(&ack.offset) {
                Some(Some(id)) if *id == ack.event_id => {}
                Some(other) => problems.push(format!(
                    "{}: {topic}/{partition}@{} holds event {other:?}, the 202 said {}",
                    ack.what, ack.offset, ack.event_id
                )),
                None => problems.push(format!(
                    "{}: nothing at {topic}/{partition}@{} (event {})",
                    ack.what, ack.offset, ack.event_id
                )),
            }
        }
    }
    problems
}

/// The `event_id` header of every record of a partition below offset `until`.
fn read_partition(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    until: i64,
) -> Result<HashMap<i64, Option<String>>, String> {
    let (_, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(30))
        .map_err(|e| format!("watermarks: {e}"))?;
    let until = until.min(high);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(|e| e.to_string())?;
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    let mut found = HashMap::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < until {
        if Instant::now() > deadline {
            return Err(format!(
                "read only up to offset {next} of {until} within 60 s"
            ));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => return Err(format!("consume: {e}")),
            Some(Ok(message)) => {
                let id = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == "event_id")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                found.insert(message.offset(), id);
                next = message.offset() + 1;
            }
        }
    }
    Ok(found)
}
