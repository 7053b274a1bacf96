//! One batch, committed: a PostgreSQL transaction locks the batch's position rows (fencing a
//! stale instance), the batch is triaged ([`super::triage`]) and handed to the sink, dead
//! letters go to `<topic>.dlq`, and the dead-letter rows and the new positions commit in the
//! same transaction as whatever the sink wrote into it.

use std::collections::HashMap;

use deadpool_postgres::Object;

use super::sequence::{self, SequenceError};
use super::sink::Sink;
use super::triage::{partitions, Item, Outcome, Triage};
use crate::dead_letter::{self, DeadLetterError, DeadLetterWriter};
use crate::decode::TransientDecodeError;
use crate::error::Cause;
use crate::positions::{self, TopicPartition};

/// A batch failed for a reason worth retrying; nothing was committed (dead letters may have
/// been written: dead-lettering is at-least-once).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The registry cannot give a writer schema yet.
    #[error("cannot decode the batch yet")]
    Decode(#[from] TransientDecodeError),
    /// No PostgreSQL connection.
    #[error("no postgresql connection")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// Locking or storing the positions and dead-letter rows failed.
    #[error("storing the batch's positions failed")]
    Positions(#[from] tokio_postgres::Error),
    /// The sink failed transiently.
    #[error("the sink failed")]
    Sink(#[source] Cause),
    /// A dead letter could not be written.
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
}

impl BatchError {
    /// The retry metric's `stage` label: `decode` or `sink`.
    pub fn stage(&self) -> &'static str {
        match self {
            BatchError::Decode(_) => "decode",
            _ => "sink",
        }
    }
}

/// Triages and commits a decoded batch through `sink`. On error nothing is committed.
pub async fn commit<K: Sink>(
    sink: &K,
    client: &mut Object,
    dead_letters: &DeadLetterWriter,
    items: &[Item],
    high_watermarks: &HashMap<TopicPartition, i64>,
) -> Result<Outcome, BatchError> {
    let spec = sink.spec();
    let (projector, version) = (spec.name.as_str(), spec.version);
    let mut tx = client.transaction().await?;
    let stored = positions::lock(&tx, projector, version, &partitions(items)).await?;
    let triage = Triage::new(items, &stored, high_watermarks);
    let spans = apply_spans(projector, &triage);
    let settled = if spec.sequenced {
        let (applied, parked) =
            sequence::apply(sink, &mut tx, &triage)
                .await
                .map_err(|e| match e {
                    SequenceError::Postgres(e) => BatchError::Positions(e),
                    SequenceError::Sink(e) => BatchError::Sink(Box::new(e)),
                })?;
        triage.settle_parked(applied, parked)
    } else {
        let applied = sink
            .apply(&mut tx, &triage.batch())
            .await
            .map_err(|e| BatchError::Sink(Box::new(e)))?;
        triage.settle(applied)
    };
    for letter in &settled.letters {
        tracing::warn!(projector, topic = %letter.record.origin.topic,
            partition = letter.record.origin.partition, offset = letter.record.origin.offset,
            error = %letter.error, "record dead-lettered");
        dead_letters.write(letter).await?;
    }
    dead_letter::record_rows(&*tx, projector, version, &settled.letters).await?;
    // with the notification, delivered at commit: the read API reads the new positions at once
    // (read-your-writes)
    positions::advance(&tx, projector, version, &settled.advances).await?;
    tx.commit().await?;
    drop(spans);
    sink.committed(client).await;
    Ok(settled.outcome)
}

/// One span per event of the batch, from before it is applied until its batch committed, each
/// a child of the trace its record carries (`traceparent`), when traces are exported. Named
/// and attributed after the OpenTelemetry messaging conventions (semantic conventions 1.27:
/// `messaging.system`, `messaging.operation.type = process`, `messaging.destination.name`).
fn apply_spans(projector: &str, triage: &Triage<'_>) -> Vec<tracing::Span> {
    if !factline_service::traces::enabled() {
        return Vec::new();
    }
    triage
        .events()
        .into_iter()
        .map(|event| {
            let span = tracing::info_span!("factline.apply", otel.kind = "consumer",
                projector, event_type = %event.envelope.event_type,
                event_id = %event.envelope.event_id, messaging.system = "kafka",
                messaging.operation.type = "process",
                messaging.destination.name = %event.origin.topic,
                messaging.destination.partition.id = event.origin.partition,
                messaging.kafka.offset = event.origin.offset);
            if let Some(traceparent) = &event.envelope.traceparent {
                factline_service::traces::set_parent(&span, traceparent);
            }
            span
        })
        .collect()
}
