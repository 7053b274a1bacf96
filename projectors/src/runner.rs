//! The consume loop: [`run`] a projection until shutdown, over any [`Sink`] ([`run_sink`]).
//!
//! Records are batched by count and time; each batch is decoded and handed to the sink, which
//! applies it and stores its positions only once the read model holds it; transient failures
//! are retried with capped backoff on the same in-memory batch (nothing is skipped); rebalances
//! discard the uncommitted records of revoked partitions. Once a second the loop exports lag,
//! records high watermarks and, while a new version rebuilds, its progress and the swap.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use factline_schemas::EventCodec;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use tokio::sync::watch;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::batch::{Item, Outcome};
use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::Config;
use crate::consumer::{self, ProjectorConsumer, ProjectorContext, SharedState};
use crate::dead_letter::DeadLetterWriter;
use crate::decode::{decode, RegistryRetry};
use crate::error::RunError;
use crate::http::{self, Health, SharedHealth};
use crate::membership::{self, Claim, MembershipError};
use crate::positions::{self, TopicPartition};
use crate::progress::{self, Estimator};
use crate::projection::Projection;
use crate::record::Record;
use crate::sink::{PostgresSink, Sink};
use crate::telemetry::Metrics;

/// Runs `projection` until `shutdown` resolves: bootstraps the sink (runtime tables,
/// migrations, views), consumes its topics in the consumer group `{name}-v{version}`, and on
/// shutdown finishes the current batch, commits it and leaves the group.
pub async fn run<P, S>(config: Config, projection: P, shutdown: S) -> Result<(), RunError>
where
    P: Projection,
    S: Future<Output = ()> + Send + 'static,
{
    let sink = PostgresSink::new(projection, &config);
    run_sink(config, sink, shutdown).await
}

/// Runs any [`Sink`] until `shutdown` resolves (see [`run`]; positions are stored in
/// PostgreSQL whatever the sink).
pub async fn run_sink<K, S>(config: Config, sink: K, shutdown: S) -> Result<(), RunError>
where
    K: Sink,
    S: Future<Output = ()> + Send + 'static,
{
    config.validate()?;
    let span = tracing::info_span!(
        "projector",
        projector = %sink.name(),
        version = sink.version()
    );
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    run_inner(config, sink, stop).instrument(span).await
}

struct Runner<K: Sink> {
    config: Config,
    crypto: factline_keystore::FieldCrypto,
    sink: K,
    name: String,
    version: u32,
    wanted: HashSet<String>,
    pool: Pool,
    codec: EventCodec,
    registry_retry: RegistryRetry,
    dead_letters: DeadLetterWriter,
    consumer: Arc<ProjectorConsumer>,
    state: SharedState,
    metrics: Metrics,
    health: SharedHealth,
    stop: watch::Receiver<bool>,
    liveness: Liveness,
    last_event_ms: HashMap<TopicPartition, i64>,
    estimator: Estimator,
    retired: bool,
    /// Why the loop must stop and the membership be replaced (slot lock lost, fenced by the
    /// broker); with an explicit instance id the process exits instead.
    failure: Arc<Mutex<Option<String>>>,
}

async fn run_inner<K: Sink>(
    config: Config,
    sink: K,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let name = sink.name().to_owned();
    let version = sink.version();
    let health: SharedHealth = Arc::new(Mutex::new(Health {
        projector: name.clone(),
        version,
        state: "starting",
        last_error: None,
        batches: 0,
        instance_id: None,
        partitions: Vec::new(),
    }));
    if let Some(addr) = config.http_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Http { addr, source })?;
        let router = http::router(health.clone());
        let mut http_stop = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    stopped(&mut http_stop).await;
                })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "http server failed");
            }
        });
        tracing::info!(%addr, "http listening");
    }

    let pg: tokio_postgres::Config = config
        .database_url
        .parse()
        .map_err(|e: tokio_postgres::Error| RunError::Pool(e.to_string()))?;
    let manager = Manager::from_config(
        pg.clone(),
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(config.database_pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| RunError::Pool(e.to_string()))?;
    // personal fields are decrypted in `decode`: the KEKs are loaded now, a start-up check
    let crypto = factline_keystore::field_crypto(&config.keys, pool.clone()).map_err(|e| {
        RunError::Config(crate::config::ConfigError::Invalid {
            name: "FACTLINE_KEK*",
            reason: e.to_string(),
        })
    })?;

    let metrics = Metrics::new(&name, version);
    let mut backoff = backoff_for(&config);
    let topics: Vec<String> = sink.topics().iter().map(|t| config.topic(t)).collect();
    let registration = Registration {
        projector: name.clone(),
        version,
        sink: sink.kind(),
        topics: topics.clone(),
        read_models: sink.read_models(),
    };
    let liveness = loop {
        let attempt = async {
            let mut client = pool
                .get()
                .await
                .map_err(|e| BootstrapError::Transient(e.to_string()))?;
            sink.bootstrap(&mut client, &registration).await
        };
        match attempt.await {
            Ok(liveness) => break liveness,
            Err(BootstrapError::Migration { migration, message }) => {
                return Err(RunError::Migration {
                    projector: name,
                    migration,
                    message,
                })
            }
            Err(BootstrapError::Transient(error)) => {
                metrics.retry("bootstrap");
                tracing::warn!(%error, "sink not ready, retrying");
                if sleep_or_stop(&mut stop, backoff.next_delay()).await {
                    return Ok(());
                }
            }
        }
    };
    tracing::info!(?liveness, "sink ready");
    if matches!(liveness, Liveness::Superseded { .. }) && sink.stops_when_retired() {
        tracing::info!("a newer version is live, nothing to do");
        return Ok(());
    }
    metrics.rebuilding(matches!(liveness, Liveness::Building { .. }));

    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &config.kafka_brokers);
    for (key, value) in &config.kafka_properties {
        kafka.set(key, value);
    }
    let mut producer = ClientConfig::new();
    for (key, value) in kafka.config_map() {
        if !CONSUMER_ONLY.contains(&key) {
            producer.set(key, value);
        }
    }
    let dead_letters = DeadLetterWriter::new(producer, &name)?;
    let joiner = Joiner {
        kafka,
        group: config.group_id(&name, version),
        explicit_instance_id: config.explicit_instance_id().map(str::to_owned),
        claims: config.static_membership && config.explicit_instance_id().is_none(),
        name: name.clone(),
        version,
        pg,
        topics,
    };
    let Some(member) = joiner.join(&metrics, &mut backoff, &mut stop).await? else {
        return Ok(()); // stopped while waiting for the database
    };
    http::update(&health, |h| h.instance_id = member.instance_id.clone());

    let wanted = sink.event_types().into_iter().collect();
    let mut runner = Runner {
        codec: EventCodec::new(&config.schema_registry_url),
        crypto,
        registry_retry: RegistryRetry::new(Duration::from_millis(config.registry_retry_ms)),
        config,
        sink,
        name,
        version,
        wanted,
        pool,
        dead_letters,
        consumer: member.consumer.clone(),
        state: member.state.clone(),
        metrics,
        health,
        stop: member.halt.clone(),
        liveness,
        last_event_ms: HashMap::new(),
        estimator: Estimator::default(),
        retired: false,
        failure: member.failure.clone(),
    };
    let mut member = member;
    joiner.subscribe(&member)?;
    let failed = loop {
        http::update(&runner.health, |h| h.state = "running");
        runner.consume().await;
        member.watcher.abort();
        let Some(reason) = failure_of(&member.failure) else {
            break None; // stopped, or retired
        };
        if *stop.borrow() {
            break None; // shutting down anyway
        }
        if !joiner.claims {
            break Some(reason); // an explicit instance id was fenced: a configuration problem
        }
        // The slot lock may be gone (another process may claim the slot) or the broker fenced
        // this member: close this consumer, claim a slot again, join under it.
        tracing::warn!(%reason, "group membership lost, joining again");
        http::update(&runner.health, |h| {
            h.state = "retrying";
            h.last_error = Some(format!("group membership lost: {reason}"));
        });
        runner.metrics.retry("membership");
        if runner.consumer.client().fatal_error().is_none() {
            // a slot another process may claim next must not keep this member's partitions
            runner.leave_group().await;
        }
        let Some(next) = joiner
            .join(&runner.metrics, &mut backoff, &mut stop)
            .await?
        else {
            break None; // stopped while waiting for the database
        };
        // the old consumer closes here, before the new one joins with a possibly equal id
        runner.consumer = next.consumer.clone();
        runner.state = next.state.clone();
        runner.stop = next.halt.clone();
        runner.failure = next.failure.clone();
        drop(std::mem::replace(&mut member, next));
        http::update(&runner.health, |h| {
            h.instance_id = member.instance_id.clone()
        });
        joiner.subscribe(&member)?;
    };
    http::update(&runner.health, |h| h.state = "stopping");
    member.watcher.abort();
    if failed.is_none() {
        runner.leave_group().await;
    }
    if runner.retired {
        runner.sink.retired().await;
        tracing::info!("retired by a newer version, stopped");
    }
    // The consumer is closed before the slot lock is released, so a process claiming the
    // slot next never shares the instance id with this one.
    drop(runner);
    drop(member);
    match failed {
        Some(reason) => {
            tracing::error!(%reason, "stopped: the process must be restarted");
            Err(RunError::Membership(reason))
        }
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// How an instance joins its consumer group: claims a slot (static membership) and creates
/// the consumer.
struct Joiner {
    kafka: ClientConfig,
    group: String,
    explicit_instance_id: Option<String>,
    claims: bool,
    name: String,
    version: u32,
    pg: tokio_postgres::Config,
    topics: Vec<String>,
}

/// One membership: the slot claim, the consumer created under it, and the signal that stops
/// the consume loop on shutdown or when the claim may be lost.
struct Member {
    instance_id: Option<String>,
    consumer: Arc<ProjectorConsumer>,
    state: SharedState,
    halt: watch::Receiver<bool>,
    failure: Arc<Mutex<Option<String>>>,
    watcher: tokio::task::JoinHandle<()>,
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
    async fn join(
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
            ProjectorContext::new(&self.name, self.version, self.pg.clone(), state.clone());
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

    fn subscribe(&self, member: &Member) -> Result<(), RunError> {
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

fn set_failure(failure: &Mutex<Option<String>>, reason: String) {
    let mut guard = match failure.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard.get_or_insert(reason);
}

fn failure_of(failure: &Mutex<Option<String>>) -> Option<String> {
    match failure.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl<K: Sink> Runner<K> {
    async fn consume(&mut self) {
        let mut batch: Vec<Record> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recv_backoff = backoff_for(&self.config);
        let batch_wait = self.config.batch_max_wait(self.sink.default_batch_wait());
        let consumer = self.consumer.clone();
        let mut stop = self.stop.clone();
        loop {
            self.drop_revoked(&mut batch);
            if batch.is_empty() {
                // A batch emptied by a revocation has no deadline: a past one would win the
                // biased select below on every turn and starve `recv`, so the next assignment
                // would never be served (seen as a projector stuck after a broker restart).
                deadline = None;
            }
            let due = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if !batch.is_empty() && (batch.len() >= self.config.batch_max_events || due) {
                let records = std::mem::take(&mut batch);
                deadline = None;
                if !self.flush(records).await {
                    return; // stopped while retrying: the batch is discarded, nothing committed
                }
                continue;
            }
            if self.retired {
                return;
            }
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => {
                    self.drop_revoked(&mut batch);
                    if !batch.is_empty() {
                        let records = std::mem::take(&mut batch);
                        self.flush(records).await;
                    }
                    return;
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {}
                // before recv: a busy stream must not starve lag metrics and the rebuild swap
                _ = tick.tick() => self.housekeeping().await,
                message = consumer.recv() => match message {
                    Ok(message) => {
                        let record = Record::from_message(&message);
                        drop(message);
                        recv_backoff.reset();
                        // A rebalance may have run inside recv: drop what it revoked first.
                        self.drop_revoked(&mut batch);
                        batch.push(record);
                        if deadline.is_none() {
                            deadline = Some(tokio::time::Instant::now() + batch_wait);
                        }
                    }
                    Err(error) => {
                        if let Some((code, reason)) = consumer.client().fatal_error() {
                            // e.g. fenced: another member joined with this instance id
                            set_failure(&self.failure, format!("fatal kafka error {code:?}: {reason}"));
                            return;
                        }
                        self.metrics.retry("consume");
                        tracing::warn!(%error, "consume failed, retrying");
                        // a stop during the pause is handled (batch committed) on the next turn
                        sleep_or_stop(&mut stop, recv_backoff.next_delay()).await;
                    }
                },
            }
        }
    }

    /// Leaves the consumer group, so this instance's partitions move to the others at once.
    /// A static member's close never leaves (KIP-345: a restart is expected to come back), so
    /// the runtime waits for a join in progress to finish (its statistics' join state
    /// `steady`), unsubscribes and keeps polling until the revocation was served and
    /// librdkafka sent its LeaveGroup — seen in its statistics as the join state going back
    /// to `init` after the partitions were given up — before the consumer is closed.
    async fn leave_group(&self) {
        // A member still joining has no member id to leave with: let the join finish first.
        let settle = tokio::time::Instant::now() + LEAVE_TIMEOUT / 2;
        let started = tokio::time::Instant::now();
        while tokio::time::Instant::now() < settle {
            {
                let state = self.state.lock();
                let steady = state.join_state.as_deref() == Some("steady");
                let no_stats = state.stats_samples == 0 && started.elapsed() >= LEAVE_GRACE;
                if steady || no_stats {
                    break;
                }
            }
            // records received meanwhile are dropped unapplied: their positions did not move
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
        }
        self.consumer.unsubscribe();
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        let mut revoked: Option<(u64, tokio::time::Instant)> = None;
        while tokio::time::Instant::now() < deadline {
            // serves the revocation callback; records still buffered are dropped unapplied
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer.recv()).await;
            let state = self.state.lock();
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

    /// Removes the records of partitions revoked since the last look.
    fn drop_revoked(&self, batch: &mut Vec<Record>) {
        let revoked: Vec<TopicPartition> = std::mem::take(&mut self.state.lock().revoked);
        if revoked.is_empty() || batch.is_empty() {
            return;
        }
        let revoked: HashSet<TopicPartition> = revoked.into_iter().collect();
        let before = batch.len();
        batch.retain(|r| !revoked.contains(&(r.origin.topic.clone(), r.origin.partition)));
        if batch.len() != before {
            tracing::info!(
                discarded = before - batch.len(),
                "uncommitted records of revoked partitions discarded"
            );
        }
    }

    /// Commits a batch, retrying transient failures with backoff. Returns false if stopped
    /// before it could commit.
    async fn flush(&mut self, records: Vec<Record>) -> bool {
        let mut backoff = backoff_for(&self.config);
        let mut stop = self.stop.clone();
        loop {
            let started = Instant::now();
            match self.try_flush(&records).await {
                Ok(outcome) => {
                    self.committed(&records, &outcome, started.elapsed());
                    return true;
                }
                Err((stage, error)) => {
                    self.metrics.retry(stage);
                    http::update(&self.health, |h| {
                        h.state = "retrying";
                        h.last_error = Some(error.clone());
                    });
                    let delay = backoff.next_delay();
                    tracing::warn!(stage, %error, attempt = backoff.attempts(),
                        delay_ms = delay.as_millis() as u64, "batch failed, retrying");
                    if self.check_retired().await {
                        return false;
                    }
                    if sleep_or_stop(&mut stop, delay).await {
                        tracing::info!("stopping with an uncommitted batch, it will be re-read");
                        return false;
                    }
                }
            }
        }
    }

    async fn try_flush(&self, records: &[Record]) -> Result<Outcome, (&'static str, String)> {
        let mut items = Vec::with_capacity(records.len());
        for record in records {
            let decoded = decode(
                &self.codec,
                &self.crypto,
                &self.wanted,
                record,
                &self.registry_retry,
            )
            .await
            .map_err(|e| ("decode", e.to_string()))?;
            items.push(Item {
                record: record.clone(),
                decoded,
            });
        }
        let mut client = self.pool.get().await.map_err(|e| ("sink", e.to_string()))?;
        let high_watermarks = self.state.lock().high_watermarks.clone();
        self.sink
            .commit(&mut client, &self.dead_letters, &items, &high_watermarks)
            .await
            .map_err(|e| ("sink", e.to_string()))
    }

    fn committed(&mut self, records: &[Record], outcome: &Outcome, took: Duration) {
        self.metrics.batch(
            outcome.applied,
            outcome.duplicates,
            outcome.dead_lettered,
            took,
        );
        for (event_type, count) in &outcome.ignored {
            self.metrics.ignored(event_type, *count);
        }
        for record in records {
            if let Some(ms) = record.timestamp_ms {
                self.last_event_ms
                    .insert((record.origin.topic.clone(), record.origin.partition), ms);
            }
        }
        tracing::debug!(
            records = records.len(),
            applied = outcome.applied,
            duplicates = outcome.duplicates,
            behind = outcome.behind,
            dead_lettered = outcome.dead_lettered,
            took_ms = took.as_millis() as u64,
            "batch committed"
        );
        http::update(&self.health, |h| {
            h.state = "running";
            h.last_error = None;
            h.batches += 1;
        });
        let assigned = {
            let mut state = self.state.lock();
            for (tp, next) in &outcome.positions {
                let entry = state.committed.entry(tp.clone()).or_insert(*next);
                *entry = (*entry).max(*next);
            }
            state.assigned.clone()
        };
        self.update_lag();
        if self.config.commit_to_kafka {
            // Informational only: positions in PostgreSQL are the truth.
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in &outcome.positions {
                if assigned.contains(&(topic.clone(), *partition)) {
                    let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
                }
            }
            if tpl.count() > 0 {
                if let Err(error) = self.consumer.commit(&tpl, CommitMode::Async) {
                    tracing::debug!(%error, "informational kafka commit failed");
                }
            }
        }
    }

    fn update_lag(&self) {
        let (assigned, committed, high) = {
            let state = self.state.lock();
            (
                state.assigned.clone(),
                state.committed.clone(),
                state.high_watermarks.clone(),
            )
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        for tp in &assigned {
            let Some(high) = high.get(tp) else { continue };
            let next = committed.get(tp).copied().unwrap_or(0);
            let lag = (high - next).max(0);
            let seconds = match (lag, self.last_event_ms.get(tp)) {
                (0, _) => 0.0,
                (_, Some(last)) => ((now_ms - last).max(0) as f64) / 1000.0,
                (_, None) => 0.0,
            };
            self.metrics.lag(&tp.0, tp.1, lag, seconds);
        }
    }

    /// Once a second: lag metrics, high watermarks for readers, and the rebuild swap.
    async fn housekeeping(&mut self) {
        self.update_lag();
        let mut partitions: Vec<String> = self
            .state
            .lock()
            .assigned
            .iter()
            .map(|(topic, partition)| format!("{topic}/{partition}"))
            .collect();
        partitions.sort();
        http::update(&self.health, |h| h.partitions = partitions);
        let watermarks: HashMap<TopicPartition, i64> = {
            let state = self.state.lock();
            state
                .high_watermarks
                .iter()
                .filter(|(tp, _)| state.assigned.contains(*tp))
                .map(|(tp, h)| (tp.clone(), *h))
                .collect()
        };
        let Ok(client) = self.pool.get().await else {
            return;
        };
        if let Err(error) =
            positions::record_high_watermarks(&**client, &self.name, self.version, &watermarks)
                .await
        {
            tracing::debug!(%error, "cannot record high watermarks");
        }
        drop(client);
        match self.liveness {
            Liveness::Building { live } => match self.caught_up().await {
                Ok(true) => self.swap(live).await,
                Ok(false) => {}
                Err(error) => tracing::debug!(%error, "cannot check rebuild progress"),
            },
            Liveness::Live => {
                self.check_retired().await;
            }
            Liveness::Superseded { .. } => {}
        }
    }

    /// For sinks that stop when retired: whether a newer version retired this one (then the
    /// loop stops).
    async fn check_retired(&mut self) -> bool {
        if !self.sink.stops_when_retired() {
            return false;
        }
        let Ok(client) = self.pool.get().await else {
            return false;
        };
        if let Ok(Some(state)) = bookkeeping::state(&**client, &self.name, self.version).await {
            if state == "retired" {
                self.retired = true;
            }
        }
        self.retired
    }

    /// Records the rebuild progress and says whether this version's stored positions reached
    /// the end of every partition.
    async fn caught_up(&mut self) -> Result<bool, String> {
        let consumer = self.consumer.clone();
        let topics: Vec<String> = self
            .sink
            .topics()
            .iter()
            .map(|t| self.config.topic(t))
            .collect();
        let ends = tokio::task::spawn_blocking(move || {
            let mut ends = HashMap::new();
            for topic in topics {
                let metadata = consumer
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                for t in metadata.topics() {
                    for p in t.partitions() {
                        let (low, high) = consumer
                            .fetch_watermarks(&topic, p.id(), Duration::from_secs(5))
                            .map_err(|e| e.to_string())?;
                        ends.insert((topic.clone(), p.id()), (low, high));
                    }
                }
            }
            Ok::<_, String>(ends)
        })
        .await
        .map_err(|e| e.to_string())??;
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let stored = positions::load(&**client, &self.name, self.version)
            .await
            .map_err(|e| e.to_string())?;
        let (done, total) = progress::measure(&ends, &stored);
        let progress = self.estimator.sample(Instant::now(), done, total);
        self.metrics.rebuild_progress(&progress);
        progress::record(&**client, &self.name, self.version, &progress)
            .await
            .map_err(|e| e.to_string())?;
        Ok(!ends.is_empty()
            && ends.iter().all(|(tp, (low, high))| {
                high <= low || stored.get(tp).is_some_and(|next| next >= high)
            }))
    }

    async fn swap(&mut self, live: u32) {
        let Ok(mut client) = self.pool.get().await else {
            return;
        };
        match self.sink.swap(&mut client, live).await {
            Ok(swapped) => {
                if swapped {
                    tracing::info!(previous = live, "rebuild caught up, read models swapped");
                }
                self.liveness = Liveness::Live;
                self.metrics.rebuilding(false);
            }
            Err(error) => tracing::warn!(%error, "read model swap failed, will retry"),
        }
    }
}

/// How long a graceful stop waits for the group to be left.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Without client statistics: how long the consumer keeps being polled after its partitions
/// were revoked, so that librdkafka sends the LeaveGroup before the consumer closes.
const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// librdkafka consumer properties not passed to the dead-letter producer (it would warn).
const CONSUMER_ONLY: &[&str] = &[
    "group.instance.id",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "auto.offset.reset",
    "partition.assignment.strategy",
    "group.protocol",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.max.bytes",
    "fetch.wait.max.ms",
    "max.partition.fetch.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
];

fn backoff_for(config: &Config) -> Backoff {
    Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    )
}

/// Sleeps, or returns true as soon as a stop is requested.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Resolves once a stop is requested (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
