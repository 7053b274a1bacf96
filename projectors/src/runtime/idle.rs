//! Quiet when idle: a consumer with nothing to read pauses its partitions between short probes.
//!
//! librdkafka fetches continuously and relies on the broker to hold an empty fetch for
//! `fetch.wait.max.ms`. A broker that answers every fetch at once (noida-db, the local stack's)
//! turns each idle consumer into a busy loop on both sides: about 0.17 of a core per projector
//! and 0.7 for the broker with the sample projectors running. So the consume loop pauses its
//! assigned partitions once it has nothing to read: no batch open, no record for
//! [`IDLE_AFTER`], and every assigned partition caught up (its committed position at the high
//! watermark of the client's last statistics). It stays paused for `PROJECTOR_IDLE_PAUSE_MS`
//! (default 100 ms; 0 never pauses), then resumes the partitions for a probe, which ends with
//! the first record (records flow again) or once every partition reported its end
//! (librdkafka's end-of-partition event: a fetch answered with nothing new), and pauses again.
//! A probe has no time limit: a fetch that takes long (a large backlog written meanwhile, a
//! slow broker) is always waited for, never cut off and asked again.
//!
//! librdkafka does not wake its broker thread on a resume (it would fetch again only at its
//! next wake-up, up to a second later), so each resume is followed by a seek to the partition's
//! next position, which does. That position is the one after the last record the loop received,
//! or, when none arrived since the partition was last positioned (assigned at its stored
//! position, or sought by the resume before), that position: librdkafka forgets a partition's
//! position on a seek, and records received before it may still be in an open batch, so
//! neither the stored position nor 0 would do (records read twice).
//!
//! What it costs: the first record written after a quiet spell is seen up to one pause later.
//! A busy stream, or a consumer catching up, never pauses.
//!
//! The same broker makes a consumer that keeps up with a steady stream spin too: once it has
//! read to the end, every fetch comes back empty at once until the next record is written (at
//! 1k records/s, `order_summary` used 0.44 of a core, two thirds of it librdkafka's fetching).
//! So a consumer also paces its fetches: once every assigned partition has reported its end
//! since the partitions were last resumed, it pauses them for `PROJECTOR_FETCH_PACE_MS`
//! (default 10; 0 never paces), then resumes them as above. A record written meanwhile is seen
//! up to one pace later. The ends are counted by partition number (librdkafka's end event
//! does not name the topic), so two topics' partitions of the same number count together: a
//! partition that reaches its end twice can stand for one of another topic that is still
//! reading, which then loses at most a pace's worth of fetching, never a record. A consumer
//! catching up reports no end, so it never paces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::consumer::{ProjectorConsumer, SharedState};
use crate::telemetry::Metrics;

/// How long the loop waits without a record before it pauses.
pub const IDLE_AFTER: Duration = Duration::from_millis(250);

/// Where the loop is in the pause cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Records flow, or did until recently.
    Active,
    /// Records flow and every partition reached its end: partitions paused for one pace.
    Paced,
    /// Partitions paused.
    Paused,
    /// Partitions resumed after a pause, waiting for a record.
    Probing,
}

/// The pause cycle of one consumer.
pub struct IdleFetch {
    consumer: Arc<ProjectorConsumer>,
    state: SharedState,
    metrics: Metrics,
    pause: Option<Duration>,
    pace: Option<Duration>,
    phase: Phase,
    /// When the current phase ends (in `Active`: when the loop counts as idle).
    until: Instant,
    /// In `Paced`: when the loop counts as idle (kept across the pace).
    idle_at: Instant,
    /// End-of-partition events seen in the current probe.
    ends: usize,
    /// End-of-partition events since the partitions were last resumed, by partition number.
    ends_by_number: HashMap<i32, usize>,
}

impl IdleFetch {
    /// A cycle pausing for `pause_ms` when idle and for `pace_ms` when caught up (0: never);
    /// `state` gives the assigned partitions and their committed positions.
    pub fn new(
        pause_ms: u64,
        pace_ms: u64,
        consumer: Arc<ProjectorConsumer>,
        state: SharedState,
        metrics: Metrics,
    ) -> IdleFetch {
        let idle_at = Instant::now() + IDLE_AFTER;
        IdleFetch {
            consumer,
            state,
            metrics,
            pause: (pause_ms > 0).then(|| Duration::from_millis(pause_ms)),
            pace: (pace_ms > 0).then(|| Duration::from_millis(pace_ms)),
            phase: Phase::Active,
            until: idle_at,
            idle_at,
            ends: 0,
            ends_by_number: HashMap::new(),
        }
    }

    /// When [`IdleFetch::turn`] must run next; none while pausing is off, a batch is open, or
    /// a probe waits for its answer.
    pub fn deadline(&self, batch_open: bool) -> Option<Instant> {
        match (self.pause, self.phase) {
            (_, Phase::Paced) => Some(self.until),
            (None, _) | (Some(_), Phase::Probing) => None,
            (Some(_), Phase::Active) if batch_open => None,
            (Some(_), _) => Some(self.until),
        }
    }

    /// A record arrived or a batch was committed: the loop is busy. Resumes the partitions
    /// if they were paused (a record from a partition assigned during the pause); a pace
    /// runs to its end.
    pub fn activity(&mut self) {
        let idle_at = Instant::now() + IDLE_AFTER;
        match self.phase {
            Phase::Paced => {
                self.idle_at = idle_at;
                return;
            }
            Phase::Paused => self.resume(),
            Phase::Active | Phase::Probing => {}
        }
        self.phase = Phase::Active;
        self.until = idle_at;
    }

    /// Partition `partition` (of one of the assigned topics) reported its end: once all did,
    /// a probe found nothing and ends, and records flowing are paced. Returns when the pace
    /// ends if this end started one.
    pub fn reached_end(&mut self, partition: i32) -> Option<Instant> {
        // counted in every phase: a probe's ends count toward the pace that follows its records
        *self.ends_by_number.entry(partition).or_default() += 1;
        match self.phase {
            Phase::Probing => {
                self.ends += 1;
                let assigned = self.state.lock().assigned.len();
                if self.ends >= assigned {
                    self.turn();
                }
            }
            Phase::Active => {
                if let Some(pace) = self.pace {
                    if self.every_partition_ended() {
                        self.pause_all();
                        self.metrics.fetch_pace();
                        self.idle_at = self.until;
                        self.phase = Phase::Paced;
                        self.until = Instant::now() + pace;
                        return Some(self.until);
                    }
                }
            }
            Phase::Paced | Phase::Paused => {}
        }
        None
    }

    /// Whether, for every partition number, as many ends were reported since the last resume
    /// as partitions of that number are assigned (none assigned: false, nothing to pace).
    fn every_partition_ended(&self) -> bool {
        let state = self.state.lock();
        if state.assigned.is_empty() {
            return false;
        }
        let mut wanted: HashMap<i32, usize> = HashMap::new();
        for (_, partition) in &state.assigned {
            *wanted.entry(*partition).or_default() += 1;
        }
        wanted.iter().all(|(partition, count)| {
            self.ends_by_number.get(partition).copied().unwrap_or(0) >= *count
        })
    }

    /// The deadline passed: end a pace, pause if caught up, or resume for a probe.
    pub fn turn(&mut self) {
        if self.phase == Phase::Paced {
            self.resume();
            self.phase = Phase::Active;
            self.until = self.idle_at;
            return;
        }
        let Some(pause) = self.pause else { return };
        match self.phase {
            Phase::Active if !self.caught_up() => {
                // records wait in the log (or the statistics do not know yet): look again later
                self.until = Instant::now() + IDLE_AFTER;
            }
            Phase::Active | Phase::Probing => {
                self.pause_all();
                self.metrics.idle_pause();
                self.phase = Phase::Paused;
                self.until = Instant::now() + pause;
            }
            Phase::Paused => {
                self.resume();
                self.phase = Phase::Probing;
                self.ends = 0;
            }
            Phase::Paced => {} // handled above
        }
    }

    /// Whether every assigned partition's committed position is at its high watermark, as
    /// the client's last statistics know it (a partition without one is not caught up).
    fn caught_up(&self) -> bool {
        let state = self.state.lock();
        state.assigned.iter().all(|tp| {
            let committed = state.committed.get(tp).copied().unwrap_or(0);
            state
                .high_watermarks
                .get(tp)
                .is_some_and(|&high| committed >= high)
        })
    }

    /// Leaves the cycle with every partition resumed (before the consumer is used elsewhere).
    pub fn finish(&mut self) {
        if matches!(self.phase, Phase::Paused | Phase::Paced) {
            self.resume();
        }
        self.phase = Phase::Active;
    }

    fn pause_all(&self) {
        match self.consumer.assignment() {
            Ok(assignment) if assignment.count() > 0 => {
                if let Err(error) = self.consumer.pause(&assignment) {
                    tracing::debug!(%error, "cannot pause idle partitions");
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot read the assignment to pause it"),
        }
    }

    /// Resumes the current assignment (a partition revoked and assigned again during the pause
    /// too; resuming one that is not paused does nothing). Each partition reports its end again
    /// once it reaches it: the count of ends starts over.
    fn resume(&mut self) {
        self.ends_by_number.clear();
        resume_at_positions(&self.consumer, &self.state);
    }
}

/// Resumes the assigned partitions and seeks each to its next position, which wakes
/// librdkafka's fetcher (see the module docs). A partition held while lead topics are read
/// stays paused: its records read meanwhile were discarded, so its position is not where it
/// resumes ([`super::lead`] resumes it).
fn resume_at_positions(consumer: &ProjectorConsumer, state: &SharedState) {
    let positions = match consumer.position() {
        Ok(positions) => positions,
        Err(error) => {
            tracing::warn!(%error, "cannot read the assignment to resume it");
            return;
        }
    };
    let mut resumed = TopicPartitionList::new();
    {
        let mut state = state.lock();
        for e in positions.elements() {
            let tp = (e.topic().to_owned(), e.partition());
            if state.leads.held.contains_key(&tp) {
                continue;
            }
            let next = match e.offset() {
                Offset::Offset(next) => next,
                // nothing received since the partition was last positioned (assigned, or
                // sought by the resume before this one: a seek forgets the position), so
                // that is still the next offset; records received before it may be in an
                // open batch, not yet committed
                _ => match state.positioned.get(&tp) {
                    Some(&next) => next,
                    None => state.committed.get(&tp).copied().unwrap_or(0),
                },
            };
            state.positioned.insert(tp, next);
            if let Err(error) =
                resumed.add_partition_offset(e.topic(), e.partition(), Offset::Offset(next))
            {
                tracing::warn!(%error, "cannot build the list of partitions to resume");
            }
        }
    }
    resume_and_seek(consumer, resumed);
}

/// Resumes `partitions` and seeks each to the offset it carries: librdkafka does not wake its
/// fetcher on a resume, a seek does (see the module docs). Shared with [`super::lead`].
pub fn resume_and_seek(consumer: &ProjectorConsumer, partitions: TopicPartitionList) {
    if partitions.count() == 0 {
        return;
    }
    if let Err(error) = consumer.resume(&partitions) {
        tracing::warn!(%error, "cannot resume paused partitions");
    }
    // asynchronous (timeout 0): errors come back through the consumer
    if let Err(error) = consumer.seek_partitions(partitions, Duration::ZERO) {
        tracing::warn!(%error, "cannot seek resumed partitions");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(pause_ms: u64) -> IdleFetch {
        cycle(pause_ms, 0)
    }

    /// A cycle that only paces, with `partitions` assigned.
    fn paced(pace_ms: u64, partitions: &[(&str, i32)]) -> IdleFetch {
        let idle = cycle(0, pace_ms);
        let mut state = idle.state.lock();
        for (topic, partition) in partitions {
            state.assigned.insert(((*topic).to_owned(), *partition));
        }
        drop(state);
        idle
    }

    fn cycle(pause_ms: u64, pace_ms: u64) -> IdleFetch {
        let consumer: ProjectorConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "idle-unit")
            .create_with_context(crate::consumer::ProjectorContext::new(
                "idle-unit",
                1,
                tokio_postgres::Config::new(),
                SharedState::default(),
            ))
            .expect("a consumer is created without a broker");
        IdleFetch::new(
            pause_ms,
            pace_ms,
            Arc::new(consumer),
            SharedState::default(),
            Metrics::new("idle-unit", 1),
        )
    }

    #[tokio::test]
    async fn zero_never_pauses() {
        assert_eq!(idle(0).deadline(false), None);
    }

    #[tokio::test]
    async fn an_open_batch_is_never_paused_and_an_idle_loop_cycles() {
        let mut idle = idle(100);
        assert_eq!(idle.deadline(true), None);
        assert!(idle.deadline(false).is_some());
        idle.turn();
        assert_eq!(idle.phase, Phase::Paused);
        // a paused loop keeps its deadline even with a batch (it cannot have one)
        assert!(idle.deadline(true).is_some());
        idle.turn();
        assert_eq!(idle.phase, Phase::Probing);
        // a probe has no deadline: it waits for a record or every partition's end
        assert_eq!(idle.deadline(false), None);
        idle.reached_end(0); // no partition assigned: one end is all of them
        assert_eq!(idle.phase, Phase::Paused);
        idle.turn();
        idle.activity();
        assert_eq!(idle.phase, Phase::Active);
    }

    #[tokio::test]
    async fn a_consumer_behind_its_high_watermark_never_pauses() {
        let mut idle = idle(100);
        let tp = ("orders".to_owned(), 0);
        {
            let mut state = idle.state.lock();
            state.assigned.insert(tp.clone());
            state.committed.insert(tp.clone(), 5);
        }
        idle.turn(); // no statistics yet: not known to be caught up
        assert_eq!(idle.phase, Phase::Active);
        idle.state.lock().high_watermarks.insert(tp.clone(), 10);
        idle.turn();
        assert_eq!(idle.phase, Phase::Active);
        idle.state.lock().committed.insert(tp, 10);
        idle.turn();
        assert_eq!(idle.phase, Phase::Paused);
    }

    #[tokio::test]
    async fn a_consumer_that_read_every_partition_to_its_end_paces_its_fetches() {
        let mut idle = paced(10, &[("orders", 0), ("orders", 1)]);
        assert_eq!(idle.reached_end(0), None);
        assert_eq!(
            idle.phase,
            Phase::Active,
            "partition 1 has not reported its end"
        );
        let pace_end = idle.reached_end(1);
        assert_eq!(idle.phase, Phase::Paced);
        assert_eq!(
            pace_end,
            idle.deadline(true),
            "the end that starts a pace says when it ends"
        );
        // a pace ends on time, whether a batch is open or not
        assert!(idle.deadline(true).is_some());
        assert!(idle.deadline(false).is_some());
        idle.activity(); // a record fetched before the pause
        assert_eq!(idle.phase, Phase::Paced);
        idle.turn();
        assert_eq!(idle.phase, Phase::Active);
        // the resume starts the count over: each partition must report its end again
        idle.reached_end(0);
        assert_eq!(idle.phase, Phase::Active);
        idle.reached_end(1);
        assert_eq!(idle.phase, Phase::Paced);
        idle.finish();
        assert_eq!(idle.phase, Phase::Active);
    }

    #[tokio::test]
    async fn partitions_of_two_topics_with_one_number_each_need_an_end() {
        let mut idle = paced(10, &[("orders", 0), ("customers", 0), ("customers", 1)]);
        idle.reached_end(0);
        idle.reached_end(1);
        assert_eq!(
            idle.phase,
            Phase::Active,
            "one of the two partitions 0 is still reading"
        );
        idle.reached_end(0);
        assert_eq!(idle.phase, Phase::Paced);
    }

    #[tokio::test]
    async fn zero_never_paces_and_nothing_assigned_is_never_paced() {
        let mut idle = paced(0, &[("orders", 0)]);
        idle.reached_end(0);
        assert_eq!(idle.phase, Phase::Active);
        assert_eq!(idle.deadline(false), None);
        let mut idle = paced(10, &[]);
        idle.reached_end(0);
        assert_eq!(idle.phase, Phase::Active);
    }

    #[tokio::test]
    async fn the_ends_a_probe_saw_count_toward_the_pace_after_its_records() {
        let mut idle = cycle(100, 10);
        {
            let mut state = idle.state.lock();
            for partition in [0, 1] {
                let tp = ("orders".to_owned(), partition);
                state.assigned.insert(tp.clone());
                state.committed.insert(tp.clone(), 5);
                state.high_watermarks.insert(tp, 5);
            }
        }
        idle.turn();
        assert_eq!(idle.phase, Phase::Paused);
        idle.turn();
        assert_eq!(idle.phase, Phase::Probing);
        idle.reached_end(1); // nothing new in partition 1
        idle.activity(); // a record of partition 0
        assert_eq!(idle.phase, Phase::Active);
        idle.reached_end(0);
        assert_eq!(idle.phase, Phase::Paced);
    }
}
