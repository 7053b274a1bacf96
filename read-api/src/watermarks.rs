//! Live Kafka high watermarks, the other half of lag: a projector that stopped also stopped
//! recording watermarks, so the read API asks the brokers itself, every 500 ms, for the
//! topics of every known projector, and at once when the projector status names a topic it has
//! not fetched yet. A partition that cannot be read keeps its last known watermark for
//! [`STALE_AFTER`]; the others are recorded anyway. After that its lag is unknown rather than
//! claimed from an old watermark (a broker that stopped answering must not make a stuck
//! projector look caught up). It also remembers when each watermark was first seen, which dates the
//! oldest record a projector has not applied yet (lag in seconds). [`Watermarks::ready`] says
//! whether one round over the topics of the first status snapshot is done (readiness).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::status::{Snapshot, StatusBoard, TopicPartition, VersionStatus};

/// How long a partition's last fetched watermark is trusted when fetching it fails.
pub const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// How many watermark changes are remembered per partition.
const HISTORY: usize = 4096;

#[derive(Debug, Default)]
struct State {
    /// (low, high) per partition.
    ends: HashMap<TopicPartition, (i64, i64)>,
    /// When each partition's watermarks were last fetched.
    fetched: HashMap<TopicPartition, DateTime<Utc>>,
    /// (high, first seen) per partition, oldest first, highs increasing.
    seen: HashMap<TopicPartition, VecDeque<(i64, DateTime<Utc>)>>,
    fetched_at: Option<DateTime<Utc>>,
    /// A round over the topics of a loaded status snapshot is done.
    ready: bool,
}

/// A projector version's distance from the end of its topics.
#[derive(Debug, Clone, PartialEq)]
pub struct Lag {
    /// Records not applied yet, over every partition.
    pub events: i64,
    /// Age of the oldest record not applied yet (0 when caught up).
    pub seconds: f64,
    /// Per partition: (next offset, high watermark).
    pub partitions: BTreeMap<TopicPartition, (i64, i64)>,
}

/// The shared watermark cache.
#[derive(Clone)]
pub struct Watermarks {
    state: Arc<Mutex<State>>,
}

impl Watermarks {
    /// Starts the refresher: `board` says which topics to watch.
    pub fn start(
        brokers: &str,
        properties: &BTreeMap<String, String>,
        board: StatusBoard,
    ) -> Result<Watermarks, rdkafka::error::KafkaError> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", brokers);
        config.set("group.id", "factline-read-api-watermarks");
        for (key, value) in properties {
            config.set(key, value);
        }
        let consumer: Arc<BaseConsumer> = Arc::new(config.create()?);
        let watermarks = Watermarks {
            state: Arc::new(Mutex::new(State::default())),
        };
        let state = Arc::downgrade(&watermarks.state);
        let mut updates = board.updates();
        tokio::spawn(async move {
            loop {
                let Some(state) = state.upgrade() else { return };
                let snapshot = board.current();
                let topics = topics_of(&snapshot);
                let fetching = topics.clone();
                let consumer = consumer.clone();
                let fetched =
                    tokio::task::spawn_blocking(move || fetch(&consumer, &fetching)).await;
                match fetched {
                    Ok(ends) => record(&state, ends, Utc::now()),
                    Err(error) => tracing::debug!(%error, "watermark task failed"),
                }
                if snapshot.read_at.is_some() {
                    state.lock().unwrap_or_else(|e| e.into_inner()).ready = true;
                }
                drop(state);
                // every 500 ms, or at once when the status names a topic not fetched yet
                let new_topic = async {
                    loop {
                        if updates.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                        let named = topics_of(&updates.borrow_and_update());
                        if named.iter().any(|t| !topics.contains(t)) {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = new_topic => {}
                }
            }
        });
        Ok(watermarks)
    }

    /// Whether a round over the topics of a loaded status snapshot is done.
    pub fn ready(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ready
    }

    /// The lag of `version`, or `None` while its topics' watermarks are unknown.
    pub fn lag(&self, version: &VersionStatus, now: DateTime<Utc>) -> Option<Lag> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        lag_of(&state, version, now)
    }
}

fn topics_of(snapshot: &Snapshot) -> Vec<String> {
    let mut topics: Vec<String> = snapshot
        .projectors
        .values()
        .flatten()
        .flat_map(|v| v.topics.iter().cloned())
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// The watermarks of every partition of `topics` that answers; the others are logged and
/// left out (their last known values stay).
fn fetch(consumer: &BaseConsumer, topics: &[String]) -> HashMap<TopicPartition, (i64, i64)> {
    let timeout = Duration::from_secs(2);
    let mut ends = HashMap::new();
    for topic in topics {
        let metadata = match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => metadata,
            Err(error) => {
                tracing::debug!(%topic, %error, "cannot fetch topic metadata");
                continue;
            }
        };
        for t in metadata.topics() {
            for p in t.partitions() {
                match consumer.fetch_watermarks(topic, p.id(), timeout) {
                    Ok(ends_of) => {
                        ends.insert((topic.clone(), p.id()), ends_of);
                    }
                    Err(error) => {
                        tracing::debug!(%topic, partition = p.id(), %error, "cannot fetch watermarks")
                    }
                }
            }
        }
    }
    ends
}

fn record(state: &Mutex<State>, ends: HashMap<TopicPartition, (i64, i64)>, now: DateTime<Utc>) {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    for (tp, (_, high)) in &ends {
        let seen = state.seen.entry(tp.clone()).or_default();
        if seen.back().is_none_or(|(h, _)| h < high) {
            seen.push_back((*high, now));
            if seen.len() > HISTORY {
                seen.pop_front();
            }
        }
    }
    for tp in ends.keys() {
        state.fetched.insert(tp.clone(), now);
    }
    state.ends.extend(ends);
    state.fetched_at = Some(now);
}

fn lag_of(state: &State, version: &VersionStatus, now: DateTime<Utc>) -> Option<Lag> {
    state.fetched_at?;
    let mut lag = Lag {
        events: 0,
        seconds: 0.0,
        partitions: BTreeMap::new(),
    };
    for (tp, (low, high)) in &state.ends {
        if !version.topics.contains(&tp.0) {
            continue;
        }
        if state
            .fetched
            .get(tp)
            .is_none_or(|fetched| now - *fetched > STALE_AFTER)
        {
            return None; // its watermark is too old to say how far behind the version is
        }
        let next = version.positions.get(tp).copied().unwrap_or(*low);
        lag.partitions.insert(tp.clone(), (next, *high));
        let behind = (high - next).max(0);
        if behind == 0 {
            continue;
        }
        lag.events += behind;
        // the record at `next` existed from the first time a watermark above it was seen
        let since = state
            .seen
            .get(tp)
            .and_then(|seen| seen.iter().find(|(h, _)| *h > next).or(seen.front()))
            .map(|(_, t)| *t)
            .unwrap_or(now);
        let seconds = ((now - since).num_milliseconds().max(0) as f64) / 1000.0;
        lag.seconds = lag.seconds.max(seconds);
    }
    if version
        .topics
        .iter()
        .any(|t| !state.ends.keys().any(|(topic, _)| topic == t))
    {
        return None; // a topic not fetched yet
    }
    Some(lag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_unapplied_records_and_dates_the_oldest() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let state = Mutex::new(State::default());
        let tp = ("orders".to_string(), 0);
        record(&state, HashMap::from([(tp.clone(), (0, 10))]), t0);
        record(
            &state,
            HashMap::from([(tp.clone(), (0, 15))]),
            t0 + chrono::Duration::seconds(4),
        );
        let mut version = crate::status::VersionStatus {
            topics: vec!["orders".into()],
            positions: BTreeMap::from([(tp.clone(), 12)]),
            ..crate::status::VersionStatus::example("p", 1, "live")
        };
        let now = t0 + chrono::Duration::seconds(10);
        let state = state.into_inner().unwrap();
        let lag = lag_of(&state, &version, now).unwrap();
        assert_eq!(lag.events, 3);
        assert_eq!(lag.seconds, 6.0); // offset 12 first existed at t0 + 4 s
        version.positions.insert(tp, 15);
        let lag = lag_of(&state, &version, now).unwrap();
        assert_eq!((lag.events, lag.seconds), (0, 0.0));
        version.topics.push("customers".into());
        assert!(lag_of(&state, &version, now).is_none());
    }

    #[test]
    fn a_watermark_that_could_not_be_fetched_for_too_long_makes_the_lag_unknown() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let state = Mutex::new(State::default());
        let (p0, p1) = (("orders".to_string(), 0), ("orders".to_string(), 1));
        record(
            &state,
            HashMap::from([(p0.clone(), (0, 5)), (p1.clone(), (0, 5))]),
            t0,
        );
        // later rounds reach partition 0 only: partition 1's broker stopped answering
        let later = t0 + STALE_AFTER + chrono::Duration::seconds(1);
        record(&state, HashMap::from([(p0.clone(), (0, 5))]), later);
        let version = crate::status::VersionStatus {
            topics: vec!["orders".into()],
            positions: BTreeMap::from([(p0, 5), (p1, 5)]),
            ..crate::status::VersionStatus::example("p", 1, "live")
        };
        let state = state.into_inner().unwrap();
        assert!(
            lag_of(&state, &version, t0).is_some(),
            "fresh watermarks give a lag"
        );
        assert!(
            lag_of(&state, &version, later).is_none(),
            "a lag of 0 from a stale watermark would over-claim freshness"
        );
    }
}
