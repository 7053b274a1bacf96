//! A projection's events applied in the runtime's batch transaction: events whose id
//! `factline_projector_applied` holds are skipped, the rest go to the projection at once in one
//! savepoint, or, if it rejects the batch, one event at a time, each in its own savepoint, which
//! isolates the offending event; the applied ids are recorded in the same transaction. A
//! projection that remembers applied ids in its own rows gets every event, and no id is
//! recorded here.

use std::collections::HashSet;

use tokio_postgres::Transaction;
use uuid::Uuid;

use super::PostgresSinkError;
use crate::error::{chain, ProjectionError};
use crate::projection::{Event, Projection};
use crate::runtime::sink::{Applied, Rejected};

/// Applies `events` (triaged by the runtime) inside `tx`.
pub(super) async fn apply<P: Projection>(
    projection: &P,
    tx: &mut Transaction<'_>,
    events: &[&Event],
) -> Result<Applied, PostgresSinkError> {
    let projector = projection.name();
    let version = projection.version() as i32;
    let runtime_dedupe = projection.applied_ids_in_rows().is_none();
    let seen: HashSet<Uuid> = if runtime_dedupe {
        let ids: Vec<Uuid> = events.iter().map(|e| e.envelope.event_id).collect();
        tx.query(
            "SELECT event_id FROM factline_projector_applied \
             WHERE projector = $1 AND version = $2 AND event_id = ANY($3)",
            &[&projector, &version, &ids],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect()
    } else {
        HashSet::new()
    };
    let fresh: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| !seen.contains(&e.envelope.event_id))
        .map(|(i, e)| (i, *e))
        .collect();
    let mut applied = Applied {
        duplicates: (events.len() - fresh.len()) as u64,
        ..Applied::default()
    };
    if fresh.is_empty() {
        return Ok(applied);
    }
    let mut applied_ids: Vec<Uuid> = Vec::with_capacity(fresh.len());
    let all: Vec<&Event> = fresh.iter().map(|(_, e)| *e).collect();
    let savepoint = tx.savepoint("factline_batch").await?;
    match projection.apply_batch(&savepoint, &all).await {
        Ok(()) => {
            savepoint.commit().await?;
            applied_ids.extend(all.iter().map(|e| e.envelope.event_id));
        }
        Err(e @ ProjectionError::Transient(_)) => return Err(PostgresSinkError::Projection(e)),
        Err(e @ ProjectionError::Permanent(_)) => {
            savepoint.rollback().await?;
            tracing::debug!(error = %chain(&e), "batch rejected, applying event by event");
            for (i, event) in fresh {
                let savepoint = tx.savepoint("factline_event").await?;
                match projection.apply(&savepoint, event).await {
                    Ok(()) => {
                        savepoint.commit().await?;
                        applied_ids.push(event.envelope.event_id);
                    }
                    Err(e @ ProjectionError::Transient(_)) => {
                        return Err(PostgresSinkError::Projection(e))
                    }
                    Err(e @ ProjectionError::Permanent(_)) => {
                        savepoint.rollback().await?;
                        // a rejected id is not recorded: a later copy is judged again
                        applied.rejected.push(Rejected {
                            event: i,
                            error: Box::new(e),
                        });
                    }
                }
            }
        }
    }
    if runtime_dedupe && !applied_ids.is_empty() {
        tx.execute(
            "INSERT INTO factline_projector_applied (projector, version, event_id) \
             SELECT $1, $2, unnest($3::uuid[]) ON CONFLICT DO NOTHING",
            &[&projector, &version, &applied_ids],
        )
        .await?;
    }
    Ok(applied)
}
