//! [`run`] a projection until shutdown, over any [`Sink`] ([`run_sink`]): start-up
//! ([`super::startup`]), joining the consumer group ([`super::group`]), the consume loop
//! ([`super::consume`]) until a stop — joining again under a new claim when the membership is
//! lost — and a graceful stop that leaves the group.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use factline_schemas::EventCodec;
use rdkafka::consumer::Consumer;
use tokio::sync::watch;
use tracing::Instrument;

use super::backoff::Backoff;
use super::consume::Runner;
use super::group::{failure_of, leave_group, Joiner};
use super::history::HistoryError;
use super::sink::Sink;
use super::startup::{self, kafka_configs};
use super::wait::{backoff_for, sleep_or_stop};
use crate::bookkeeping::{Liveness, Registration};
use crate::config::Config;
use crate::dead_letter::DeadLetterWriter;
use crate::decode::RegistryRetry;
use crate::error::{chain, RunError};
use crate::http::{self, Health, SharedHealth};
use crate::positions::RecordedWatermarks;
use crate::postgres::PostgresSink;
use crate::progress::Estimator;
use crate::projection::Projection;
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
        projector = %sink.spec().name,
        version = sink.spec().version
    );
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    run_inner(config, sink, stop).instrument(span).await
}

async fn run_inner<K: Sink>(
    config: Config,
    sink: K,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    let name = sink.spec().name.clone();
    let version = sink.spec().version;
    let health: SharedHealth = Arc::new(Mutex::new(Health {
        projector: name.clone(),
        version,
        state: "starting",
        last_error: None,
        batches: 0,
        instance_id: None,
        partitions: Vec::new(),
    }));
    startup::serve_http(&config, &health, &stop).await?;
    let (pg, pool) = startup::pool(&config)?;
    // personal fields are decrypted in `decode`: the KEKs are loaded now, a start-up check
    let crypto = factline_keystore::field_crypto(&config.keys, pool.clone()).map_err(|e| {
        RunError::Config(crate::config::ConfigError::Invalid {
            name: "FACTLINE_KEK*",
            reason: e.to_string(),
        })
    })?;

    let metrics = Metrics::new(&name, version);
    let mut backoff = backoff_for(&config);
    let topics: Vec<String> = sink.spec().topics.iter().map(|t| config.topic(t)).collect();
    let registration = Registration {
        projector: name.clone(),
        version,
        sink: sink.spec().kind,
        topics: topics.clone(),
        read_models: sink.spec().read_models.clone(),
    };
    let bootstrapped = startup::bootstrap(
        &sink,
        &pool,
        &registration,
        &metrics,
        &mut backoff,
        &mut stop,
    )
    .await?;
    let Some(liveness) = bootstrapped else {
        return Ok(()); // stopped while the sink was not ready
    };
    tracing::info!(?liveness, "sink ready");
    if matches!(liveness, Liveness::Superseded { .. }) && sink.stops_when_retired() {
        tracing::info!("a newer version is live, nothing to do");
        return Ok(());
    }
    metrics.rebuilding(matches!(liveness, Liveness::Building { .. }));

    let (kafka, producer) = kafka_configs(&config);
    let dead_letters = DeadLetterWriter::new(producer, &name)?;
    let joiner = Joiner {
        kafka,
        group: config.group_id(&name, version),
        explicit_instance_id: config.explicit_instance_id().map(str::to_owned),
        claims: config.static_membership && config.explicit_instance_id().is_none(),
        name: name.clone(),
        version,
        pg,
        lead_topics: sink
            .spec()
            .lead_topics
            .iter()
            .map(|t| config.topic(t))
            .collect(),
        topics,
    };
    let Some(member) = joiner.join(&metrics, &mut backoff, &mut stop).await? else {
        return Ok(()); // stopped while waiting for the database
    };
    http::update(&health, |h| h.instance_id = member.instance_id.clone());

    let wanted = sink.spec().event_types.iter().cloned().collect();
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
        watermarks: RecordedWatermarks::new(std::time::Instant::now()),
        estimator: Estimator::default(),
        retired: false,
        failure: member.failure.clone(),
    };
    let mut member = member;
    if read_history(&mut runner, &joiner.topics, &mut backoff, &mut stop).await? {
        joiner.subscribe(&member)?;
    }
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
            leave_group(&runner.consumer, &runner.state).await;
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
        // a new state counts its assignments from 0: every watermark is written again
        runner.watermarks = RecordedWatermarks::new(std::time::Instant::now());
        runner.stop = next.halt.clone();
        runner.failure = next.failure.clone();
        drop(std::mem::replace(&mut member, next));
        http::update(&runner.health, |h| {
            h.instance_id = member.instance_id.clone()
        });
        if read_history(&mut runner, &joiner.topics, &mut backoff, &mut stop).await? {
            joiner.subscribe(&member)?;
        }
    };
    http::update(&runner.health, |h| h.state = "stopping");
    member.watcher.abort();
    if failed.is_none() {
        leave_group(&runner.consumer, &runner.state).await;
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

/// Reads the history below the log start from the archive ([`super::history`]), retrying
/// transient failures with backoff. False when stopped meanwhile; an error when history is
/// missing (the projector stops rather than build an incomplete read model).
async fn read_history<K: Sink>(
    runner: &mut Runner<K>,
    topics: &[String],
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, RunError> {
    loop {
        match runner.read_history(topics).await {
            Ok(go_on) => return Ok(go_on),
            Err(error @ (HistoryError::Missing { .. } | HistoryError::Ahead { .. })) => {
                http::update(&runner.health, |h| {
                    h.state = "failed";
                    h.last_error = Some(error.to_string());
                });
                return Err(error.into());
            }
            Err(error) => {
                let error = chain(&error);
                runner.metrics.retry("history");
                http::update(&runner.health, |h| {
                    h.state = "retrying";
                    h.last_error = Some(error.clone());
                });
                tracing::warn!(%error, "reading history from the archive failed, retrying");
                if sleep_or_stop(stop, backoff.next_delay()).await {
                    return Ok(false);
                }
            }
        }
    }
}
