//! The Kafka consumer of a projector and its rebalance handling.
//!
//! On every assignment the callback reads the stored positions from PostgreSQL and assigns the
//! partitions at those offsets (or the beginning), so the projector resumes where its sink says,
//! never where Kafka's committed offsets say. On revocation it records the revoked partitions;
//! the consume loop then discards the uncommitted records of those partitions before it takes
//! the next record, so a partition handed to another instance is neither lost nor applied twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext};

use crate::positions::{load_blocking, TopicPartition};
use crate::runtime::lead::{hold_for_leads, Leads};

/// What the rebalance callback tells the consume loop.
#[derive(Debug, Default)]
pub struct RebalanceState {
    /// Partitions revoked since the loop last looked.
    pub revoked: Vec<TopicPartition>,
    /// Partitions currently assigned.
    pub assigned: HashSet<TopicPartition>,
    /// Positions known to be committed (a lower bound of the stored ones), used when the
    /// database cannot be read during a rebalance.
    pub committed: HashMap<TopicPartition, i64>,
    /// Where each assigned partition was last positioned: the offset it was assigned at, or
    /// where the idle cycle last sought it ([`crate::runtime::idle`]). With no record received
    /// since, it is the partition's next offset.
    pub positioned: HashMap<TopicPartition, i64>,
    /// High watermarks from the client's statistics.
    pub high_watermarks: HashMap<TopicPartition, i64>,
    /// Assignment changes seen (each assignment and each revocation counts one).
    pub assignments: u64,
    /// Statistics samples received so far, and the group join state of the last one
    /// (`init` once a member left, or before it first joined).
    pub stats_samples: u64,
    /// See `stats_samples`.
    pub join_state: Option<String>,
    /// Lead partitions being read first and the partitions paused meanwhile
    /// ([`crate::runtime::lead`]).
    pub leads: Leads,
}

/// The shared rebalance state.
#[derive(Debug, Clone, Default)]
pub struct SharedState(Arc<Mutex<RebalanceState>>);

impl SharedState {
    /// Locks the state (recovering from a poisoned lock: the state stays consistent per field).
    pub fn lock(&self) -> MutexGuard<'_, RebalanceState> {
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The consumer context: rebalance callbacks and statistics.
pub struct ProjectorContext {
    projector: String,
    version: u32,
    pg: tokio_postgres::Config,
    state: SharedState,
    lead_topics: HashSet<String>,
}

impl ProjectorContext {
    /// A context for one projector version.
    pub fn new(
        projector: &str,
        version: u32,
        pg: tokio_postgres::Config,
        state: SharedState,
    ) -> Self {
        ProjectorContext {
            projector: projector.to_owned(),
            version,
            pg,
            state,
            lead_topics: HashSet::new(),
        }
    }

    /// Reads these (prefixed) topics first on every assignment ([`crate::runtime::lead`]).
    pub fn with_lead_topics(mut self, topics: impl IntoIterator<Item = String>) -> Self {
        self.lead_topics = topics.into_iter().collect();
        self
    }

    fn assign_at_stored_positions(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let mut starts = Vec::with_capacity(partitions.len());
        let stored = match load_blocking(
            self.pg.clone(),
            self.projector.clone(),
            self.version,
            Duration::from_secs(10),
        ) {
            Ok(stored) => stored,
            Err(error) => {
                // Lower bounds are safe: records below the stored position are skipped inside
                // the batch transaction, which locks and reads the position row.
                tracing::warn!(projector = %self.projector, %error,
                    "positions unreadable during rebalance, assigning at last known positions");
                self.state.lock().committed.clone()
            }
        };
        for (topic, partition) in &partitions {
            // offset 0, not "beginning": if the oldest records were deleted this is out of
            // range and the runtime reads them from the archive instead of skipping them
            let start = stored
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or(0);
            starts.push(((topic.clone(), *partition), start));
            let offset = Offset::Offset(start);
            if let Err(error) = tpl.set_partition_offset(topic, *partition, offset) {
                tracing::error!(projector = %self.projector, topic, partition, %error,
                    "cannot set assignment offset");
            }
            tracing::info!(projector = %self.projector, topic, partition, ?offset, "partition assigned");
        }
        // librdkafka keeps a partition paused by the application (the idle cycle, the lead
        // topics) paused across unassign and assign. A partition paused before a rebalance
        // and assigned again would never be fetched: the idle cycle, probing meanwhile on an
        // empty assignment, waits for a record or an end that never comes (seen as
        // `customer_stats` silent after a broker restart). So every assignment starts
        // unpaused, resumed before it is assigned so the fetcher starts at once; the lead
        // topics hold what they must below, the idle cycle pauses again when idle.
        if let Err(error) = consumer.resume(tpl) {
            tracing::error!(projector = %self.projector, %error, "cannot resume the assignment");
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(error) = result {
            tracing::error!(projector = %self.projector, %error, "assignment failed");
            return;
        }
        {
            let mut state = self.state.lock();
            for (tp, start) in &starts {
                state.positioned.insert(tp.clone(), *start);
            }
            for tp in &partitions {
                if let Some(next) = stored.get(tp) {
                    let known = state.committed.entry(tp.clone()).or_insert(*next);
                    *known = (*known).max(*next);
                }
            }
            state.assigned.extend(partitions);
            state.assignments += 1;
        }
        hold_for_leads(consumer, &self.lead_topics, &starts, &self.state);
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let partitions: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        {
            let mut state = self.state.lock();
            for p in &partitions {
                state.assigned.remove(p);
                state.positioned.remove(p);
            }
            state.leads.revoke(&partitions);
            state.revoked.extend(partitions.iter().cloned());
            state.assignments += 1;
        }
        tracing::info!(projector = %self.projector, partitions = ?partitions, "partitions revoked");
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(error) = result {
            tracing::error!(projector = %self.projector, %error, "unassignment failed");
        }
    }
}

impl ClientContext for ProjectorContext {
    fn stats(&self, statistics: Statistics) {
        let mut state = self.state.lock();
        state.stats_samples += 1;
        state.join_state = statistics.cgrp.map(|c| c.join_state);
        for (topic, t) in statistics.topics {
            for (partition, p) in t.partitions {
                if partition >= 0 && p.hi_offset >= 0 {
                    state
                        .high_watermarks
                        .insert((topic.clone(), partition), p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // end-of-partition events (enabled for the idle cycle, see `crate::runtime::idle`) are
        // not errors; librdkafka hands some of them here as well
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(projector = %self.projector, %error, reason, "kafka client error");
    }
}

impl ConsumerContext for ProjectorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign_at_stored_positions(consumer, tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(consumer, tpl),
            other => {
                tracing::error!(projector = %self.projector, error = ?other, "rebalance error");
                self.revoke(consumer, tpl);
            }
        }
    }
}

/// The projector's consumer.
pub type ProjectorConsumer = StreamConsumer<ProjectorContext>;

/// Defaults the runtime sets unless `KAFKA_PROPERTY_*` overrides them.
///
/// - read from the beginning when nothing is stored;
/// - statistics every second, for the high watermarks;
/// - a prefetch of at most 8 MiB, and 2000 records per partition (a default batch), instead
///   of librdkafka's 64 MiB and 100k: a batch never needs more, and catching up a large backlog
///   then takes tens of MiB instead of hundreds. A partition whose prefetch is full is checked
///   again after 20 ms (`fetch.queue.backoff.ms`; librdkafka's 1 s would stall a fast sink).
///   It also keeps a consumer whose sink is the bottleneck from fetching at its partitions'
///   ends over and over while its prefetch waits: against a broker that answers an empty
///   fetch at once (noida-db), that loop took 0.3 of a core per search projector
///   (`make bench`: 0.56 → 0.25 core, and twice the events per second);
/// - a broker holds a fetch at most 50 ms when there is nothing new, so a record written to
///   an idle topic is seen promptly;
/// - a member the broker has not heard from for 30 s is dead (`session.timeout.ms`, librdkafka's
///   default is 45 s), heartbeats every 3 s. With static membership (see
///   [`crate::membership`]) a restarted instance takes its slot back at once; the session
///   timeout only decides when the partitions of an instance that stays down move to the
///   others (real Kafka; noida-db never expires a member, see the README).
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "30000"),
    ("heartbeat.interval.ms", "3000"),
    ("auto.offset.reset", "error"),
    ("statistics.interval.ms", "1000"),
    ("queued.max.messages.kbytes", "8192"),
    ("queued.min.messages", "2000"),
    ("fetch.queue.backoff.ms", "20"),
    ("fetch.wait.max.ms", "50"),
];

/// Creates the consumer: manual offsets only, statistics for the high watermarks, static
/// membership as `instance_id` when given.
pub fn create(
    mut client: ClientConfig,
    group_id: &str,
    instance_id: Option<&str>,
    context: ProjectorContext,
) -> Result<ProjectorConsumer, KafkaError> {
    if let Some(instance_id) = instance_id {
        client.set("group.instance.id", instance_id);
    }
    client
        .set("group.id", group_id)
        // offsets are stored by the loop once a batch is committed in PostgreSQL (the
        // truth); `enable.auto.commit` (set from `PROJECTOR_COMMIT_TO_KAFKA`) sends them
        .set("enable.auto.offset.store", "false")
        // end-of-partition events end the idle cycle's probes early (see `crate::runtime::idle`)
        .set("enable.partition.eof", "true");
    for (name, value) in CONSUMER_DEFAULTS {
        if client.get(name).is_none() {
            client.set(*name, *value);
        }
    }
    client.create_with_context(context)
}
