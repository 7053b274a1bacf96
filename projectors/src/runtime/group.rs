//! The consumer group membership of an instance: it claims an instance slot (static
//! membership, a PostgreSQL advisory lock), creates its consumer under that id, notices when
//! the claim may be lost, and leaves the group on a graceful stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::ClientConfig;
use tokio::sync::watch;

use super::wait::{sleep_or_stop, stopped};
use crate::consumer::{self, ProjectorConsumer, ProjectorContext, SharedState};
use crate::error::RunError;
use crate::membership::{self, Claim, MembershipError};
use crate::telemetry::Metrics;

/// How an instance joins its consumer group: claims a slot (static membership) and creates
/// the consumer.
pub struct Joiner {
    /// The consumer's Kafka configuration.
    pub kafka: ClientConfig,
    /// The consumer group.
    pub group: String,
    /// `KAFKA_PROPERTY_GROUP_INSTANCE_ID`, if set.
    pub explicit_instance_id: Option<String>,
    /// Whether slots are claimed (static membership without an explicit id).
    pub claims: bool,
    /// The projector name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// PostgreSQL (slot locks, positions on assignment).
    pub pg: tokio_postgres::Config,
    /// The prefixed topics.
    pub topics: Vec<String>,
    /// The prefixed topics read first on every assignment ([`crate::runtime::lead`]).
    pub lead_topics: Vec<String>,
}

/// One membership: the slot claim, the consumer created under it, and the signal that stops
/// the consume loop on shutdown or when the claim may be lost.
pub struct Member {
    /// The `group.instance.id`, if static.
    pub instance_id: Option<String>,
    /// The consumer.
    pub consumer: Arc<ProjectorConsumer>,
    /// What its callbacks saw (assignment, watermarks, statistics).
    pub state: SharedState,
    /// Becomes true on shutdown or when the claim may be lost.
    pub halt: watch::Receiver<bool>,
    /// Why the membership must be replaced, once it must.
    pub failure: Arc<Mutex<Option<String>>>,
    /// The task watching the claim and the shutdown.
    pub watcher: tokio::task::JoinHandle<()>,
    // held for its lock, dropped last: the lock outlives the consumer
    _claim: Option<Claim>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Joiner {
    /// Claims a slot (retrying while PostgreSQL is unavailable) and creates the consumer,
    /// not yet subscribed; `None` if stopped first.
    pub async fn join(
        &self,
        metrics: &Metrics,
        backoff: &mut crate::backoff::Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Member>, RunError> {
        let claim = if self.claims {
            match claim_slot(&self.pg, &self.group, metrics, backoff, stop).await? {
                Some(claim) => Some(claim),
                None => return Ok(None),
            }
        } else {
            None
        };
        let instance_id = claim
            .as_ref()
            .map(|c| c.instance_id.clone())
            .or_else(|| self.explicit_instance_id.clone());
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (halt_tx, halt) = watch::channel(false);
        let watcher = {
            let mut outer = stop.clone();
            let lost = claim.as_ref().map(Claim::lost_signal);
            let failure = failure.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = stopped(&mut outer) => {}
                    reason = membership::wait_lost(lost) => set_failure(&failure, reason),
                }
                let _ = halt_tx.send(true);
            })
        };
        let state = SharedState::default();
        let context =
            ProjectorContext::new(&self.name, self.version, self.pg.clone(), state.clone())
                .with_lead_topics(self.lead_topics.clone());
        let consumer = Arc::new(consumer::create(
            self.kafka.clone(),
            &self.group,
            instance_id.as_deref(),
            context,
        )?);
        Ok(Some(Member {
            instance_id,
            consumer,
            state,
            halt,
            failure,
            watcher,
            _claim: claim,
        }))
    }

    /// Subscribes the member's consumer to the topics.
    pub fn subscribe(&self, member: &Member) -> Result<(), RunError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        member.consumer.subscribe(&topics)?;
        tracing::info!(topics = ?self.topics, group = %self.group,
            instance_id = ?member.instance_id, "subscribed");
        Ok(())
    }
}

/// Claims an instance slot, retrying while PostgreSQL is unavailable; `None` if stopped first.
async fn claim_slot(
    pg: &tokio_postgres::Config,
    group: &str,
    metrics: &Metrics,
    backoff: &mut crate::backoff::Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Claim>, RunError> {
    loop {
        match membership::claim(pg, group).await {
            Ok(claim) => {
                tracing::info!(instance_id = %claim.instance_id, slot = claim.slot,
                    "instance slot claimed");
                return Ok(Some(claim));
            }
            Err(MembershipError::Database(error)) => {
                metrics.retry("membership");
                tracing::warn!(%error, "cannot claim an instance slot, retrying");
                if sleep_or_stop(stop, backoff.next_delay()).await {
                    return Ok(None);
                }
            }
            Err(full @ MembershipError::Full(_)) => {
                return Err(RunError::Membership(full.to_string()))
            }
        }
    }
}

/// Records why the membership must be replaced (the first reason wins).
pub fn set_failure(failure: &Mutex<Option<String>>, reason: String) {
    let mut guard = match failure.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.get_or_insert(reason);
}

/// Why the membership must be replaced, if it must.
pub fn failure_of(failure: &Mutex<Option<String>>) -> Option<String> {
    match failure.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Leaves the consumer group, so this instance's partitions move to the others at once.
/// A static member's close never leaves (KIP-345: a restart is expected to come back), so
/// the runtime waits for a join in progress to finish (its statistics' join state
/// `steady`), unsubscribes and keeps polling until the revocation was served and
/// librdkafka sent its LeaveGroup — seen in its statistics as the join state going back
/// to `init` after the partitions were given up — before the consumer is closed.
pub async fn leave_group(consumer: &ProjectorConsumer, state: &SharedState) {
    // A member still joining has no member id to leave with: let the join finish first.
    let settle = tokio::time::Instant::now() + LEAVE_TIMEOUT / 2;
    let started = tokio::time::Instant::now();
    while tokio::time::Instant::now() < settle {
        {
            let state = state.lock();
            let steady = state.join_state.as_deref() == Some("steady");
            let no_stats = state.stats_samples == 0 && started.elapsed() >= LEAVE_GRACE;
            if steady || no_stats {
                break;
            }
        }
        // records received meanwhile are dropped unapplied: their positions did not move
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
    let mut revoked: Option<(u64, tokio::time::Instant)> = None;
    while tokio::time::Instant::now() < deadline {
        // serves the revocation callback; records still buffered are dropped unapplied
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
        let state = state.lock();
        if !state.assigned.is_empty() {
            continue;
        }
        let (sample, since) =
            *revoked.get_or_insert((state.stats_samples, tokio::time::Instant::now()));
        let left = state.stats_samples > sample && state.join_state.as_deref() == Some("init");
        // without statistics (statistics.interval.ms=0) a grace period has to do
        let no_stats = state.stats_samples == 0 && since.elapsed() >= LEAVE_GRACE;
        if left || no_stats {
            return;
        }
    }
    tracing::warn!("leaving the group did not complete in time");
}

/// How long a graceful stop waits for the group to be left.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Without client statistics: how long the consumer keeps being polled after its partitions
/// were revoked, so that librdkafka sends the LeaveGroup before the consumer closes.
const LEAVE_GRACE: Duration = Duration::from_secs(2);
