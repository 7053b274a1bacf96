//! One command from body to acknowledged event: catalog lookup, permission, validation
//! (`Command::build_event`), idempotency, Avro encoding, in-flight budget, produce, answer.
//! Shared by the single and the batch endpoint, so both answer exactly alike.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::idempotency::{event_id_for, fingerprint, Claim, IdempotencyKey};
use crate::producer::ProduceError;
use crate::request_meta::RequestMeta;
use crate::state::AppState;
use chrono::{DurationRound, TimeDelta, Utc};
use factline_keystore::KeyStoreError;
use factline_schemas::{Envelope, Position};
use serde::Serialize;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The answer to an accepted command (`202`): the event is on the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The event's id (deterministic when an Idempotency-Key was sent: the same command, principal,
    /// key and body always get the same id).
    pub event_id: Uuid,
    /// The topic it was written to.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The opaque position token for read-your-writes.
    pub position: String,
}

/// One command to ingest.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The command's name (`PlaceOrder`).
    pub command: String,
    /// The client's JSON body.
    pub body: serde_json::Value,
    /// The request's correlation, causation and trace context.
    pub meta: RequestMeta,
}

/// Counts an answered command in the metrics (`command` is `unknown` for names outside the
/// catalog, so clients cannot create unbounded label values).
pub fn record(state: &AppState, command: &str, status: u16, started: Instant) {
    let label = if state.catalog.command(command).is_some() {
        command
    } else {
        "unknown"
    };
    state
        .request_metrics
        .record(label, status, started.elapsed());
}

/// Ingests one command in its own task, so a client that disconnects cannot cancel a produce
/// half way (the idempotency store always learns the outcome).
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    submission: Submission,
) -> Result<Accepted, ApiError> {
    let task = {
        let state = state.clone();
        let caller = caller.clone();
        tokio::spawn(async move { ingest(&state, &caller, submission).await })
    };
    match task.await {
        Ok(result) => result,
        Err(error) => Err(ApiError::Internal(format!("ingest task failed: {error}"))),
    }
}

/// How many items of a batch one task ingests (concurrently, each on its own). A task per
/// item spent about 5% of the batch endpoint's CPU spawning, scheduling and waking tasks; a
/// task per 64 items still spreads a batch over the cores.
const ITEMS_PER_TASK: usize = 64;

/// Ingests a batch's items (or answers the error an item already has), in tasks of
/// [`ITEMS_PER_TASK`] items, so a client that disconnects cannot cancel a produce half way.
/// Every ingested item is counted in the metrics; the results come in the items' order.
pub async fn submit_all(
    state: &AppState,
    caller: &Caller,
    submissions: Vec<Result<Submission, ApiError>>,
    started: Instant,
) -> Vec<Result<Accepted, ApiError>> {
    let total = submissions.len();
    let mut submissions = submissions.into_iter().peekable();
    let mut tasks = Vec::with_capacity(total.div_ceil(ITEMS_PER_TASK));
    while submissions.peek().is_some() {
        let chunk: Vec<_> = submissions.by_ref().take(ITEMS_PER_TASK).collect();
        let (state, caller) = (state.clone(), caller.clone());
        let len = chunk.len();
        let task = tokio::spawn(async move {
            let items = chunk.into_iter().map(|submission| {
                let (state, caller) = (&state, &caller);
                async move {
                    let submission = submission?;
                    let command = submission.command.clone();
                    let result = ingest(state, caller, submission).await;
                    let status = result
                        .as_ref()
                        .map_or_else(|e| e.status().as_u16(), |_| 202);
                    record(state, &command, status, started);
                    result
                }
            });
            futures::future::join_all(items).await
        });
        tasks.push((len, task));
    }
    let mut results = Vec::with_capacity(total);
    for (len, task) in tasks {
        match task.await {
            Ok(chunk) => results.extend(chunk),
            Err(error) => results.extend(
                (0..len).map(|_| Err(ApiError::Internal(format!("ingest task failed: {error}")))),
            ),
        }
    }
    results
}

async fn ingest(
    state: &AppState,
    caller: &Caller,
    submission: Submission,
) -> Result<Accepted, ApiError> {
    let Submission {
        command: name,
        body,
        meta,
    } = submission;
    let command = state
        .catalog
        .command(&name)
        .ok_or_else(|| ApiError::UnknownCommand(name.clone()))?;
    if !caller.allows(&name) {
        return Err(ApiError::Forbidden(name));
    }
    // The fingerprint reads the body before the event takes its strings.
    let body_fingerprint = meta
        .idempotency_key
        .as_ref()
        .map(|_| fingerprint(&state.fingerprint_key, &body));
    // Millisecond precision: the Avro timestamps and the occurred_at header agree exactly.
    let now = Utc::now();
    let occurred_at = now
        .duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or(now);
    let event = command
        .build_event(body, occurred_at)
        .map_err(ApiError::Invalid)?;

    let retry_after_secs = state.config.retry_after_secs;
    let (event_id, guard) = match (&meta.idempotency_key, body_fingerprint) {
        (Some(key), Some(body_fingerprint)) => {
            // Waiting for a duplicate in progress is bounded by its own delivery timeout.
            let wait = state.config.message_timeout() + Duration::from_secs(5);
            let scoped = IdempotencyKey::new(&name, &caller.principal(), key);
            match state
                .idempotency
                .claim(&scoped, body_fingerprint, wait)
                .await
            {
                Ok(Claim::Owner(guard)) => (event_id_for(&scoped, &body_fingerprint), Some(guard)),
                Ok(Claim::Replay(answer)) => {
                    metrics::counter!("factline_write_side_idempotent_replays_total").increment(1);
                    return Ok((*answer).clone());
                }
                Ok(Claim::Conflict) => return Err(ApiError::IdempotencyConflict),
                Err(error) => {
                    return Err(ApiError::Unavailable {
                        reason: error.to_string(),
                        retry_after_secs,
                    })
                }
            }
        }
        _ => (Uuid::new_v4(), None),
    };

    // Personal data: an erasing event destroys its subject's key first (so the erasure holds
    // even if producing fails and the client retries), then marked fields are encrypted.
    let mut event = event;
    let key_store_unavailable = |error: KeyStoreError| {
        tracing::warn!(%error, command = %name, "key store unavailable");
        ApiError::Unavailable {
            reason: "key store unavailable".into(),
            retry_after_secs,
        }
    };
    let schema = command.event();
    state
        .crypto
        .erase(schema, &event.value)
        .await
        .map_err(key_store_unavailable)?;
    if state.config.encrypt_personal_data {
        state
            .crypto
            .seal(schema, &mut event.value)
            .await
            .map_err(key_store_unavailable)?;
    }

    // traces (when exported): the command's span continues the client's trace (or the one
    // made up for it), and the record carries its produce span as `traceparent`
    let spans = factline_service::traces::enabled().then(|| {
        let command_span = tracing::info_span!("factline.command", otel.kind = "server",
            command = %name, event_id = %event_id);
        factline_service::traces::set_parent(&command_span, &meta.traceparent);
        let produce_span = tracing::info_span!(parent: &command_span, "factline.produce",
            otel.kind = "producer", messaging.system = "kafka",
            messaging.operation.type = "send", messaging.destination.name = %event.topic);
        (command_span, produce_span)
    });
    let traceparent = spans
        .as_ref()
        .and_then(|(_, produce)| factline_service::traces::traceparent(produce))
        .unwrap_or_else(|| meta.traceparent.clone());

    let envelope = Envelope {
        event_id,
        event_type: event.event_type.clone(),
        command_id: Uuid::new_v4(),
        correlation_id: meta.correlation_id.clone(),
        causation_id: meta.causation_id.clone(),
        occurred_at,
        traceparent: Some(traceparent),
    };
    let headers = envelope.to_headers();

    let payload = state.codec.encode(&event).await.map_err(|error| {
        if error.is_transient() {
            ApiError::Unavailable {
                reason: "schema registry unavailable".into(),
                retry_after_secs,
            }
        } else {
            ApiError::Internal(format!("cannot encode {}: {error}", event.event_type))
        }
    })?;

    let size = payload.len()
        + event.key.len()
        + headers
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    let _permit = state
        .budget
        .acquire(size)
        .await
        .map_err(|_| ApiError::Unavailable {
            reason: "too many commands in flight".into(),
            retry_after_secs,
        })?;

    let delivered = state
        .kafka
        .produce(&event.topic, &event.key, &payload, &headers)
        .await
        .map_err(|error| {
            metrics::counter!("factline_write_side_produce_errors_total", "kind" => error.kind())
                .increment(1);
            match &error {
                ProduceError::NotWritten {
                    transient: true, ..
                } => tracing::debug!(%event_id, topic = %event.topic, %error, "produce refused"),
                _ => tracing::warn!(%event_id, topic = %event.topic, %error, "produce failed"),
            }
            match error {
                ProduceError::NotWritten {
                    too_large: true, ..
                } => ApiError::PayloadTooLarge {
                    limit: state.config.max_body_bytes,
                },
                ProduceError::NotWritten {
                    transient: true,
                    reason,
                    ..
                } => ApiError::Unavailable {
                    reason,
                    retry_after_secs,
                },
                ProduceError::NotWritten { reason, .. } => {
                    ApiError::Internal(format!("the broker refused {event_id}: {reason}"))
                }
                ProduceError::Unknown { reason } => ApiError::OutcomeUnknown {
                    event_id,
                    reason,
                    retry_after_secs,
                },
            }
        })?;

    let accepted = Accepted {
        event_id,
        position: Position {
            topic: event.topic.clone(),
            partition: delivered.partition,
            offset: delivered.offset,
        }
        .to_token(),
        topic: event.topic,
        partition: delivered.partition,
        offset: delivered.offset,
    };
    tracing::debug!(%event_id, topic = %accepted.topic, partition = accepted.partition,
        offset = accepted.offset, command = %name, "event written");
    if let Some(guard) = guard {
        guard.complete(accepted.clone());
    }
    Ok(accepted)
}
