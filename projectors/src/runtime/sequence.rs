//! Sequenced dead-lettering, for projections that opt in
//! ([`Projection::sequenced_dead_letters`](crate::Projection::sequenced_dead_letters)): once an
//! event of a key is dead-lettered, the later events of that key (same topic) are **parked**
//! (dead-lettered too, with an error naming the record they wait for) instead of applied, until
//! the first one is redriven and applied; other keys flow on. So a read model never applies an
//! `OrderShipped` whose `OrderPlaced` it rejected.
//!
//! The blocked keys live in `factline_projector_blocked_keys` (one row per projector version,
//! topic and key, naming the record that blocks it), read and written in the batch's
//! transaction. A redriven copy of that record (header `redriven_from`) unblocks the key when
//! it is applied; the parked records, redriven after it in log order, then apply in turn.
//!
//! Only a sink that writes into the runtime's transaction can be sequenced: when the sink
//! rejects an event whose key has later events in the same batch, the runtime rolls the sink's
//! work back to a savepoint and applies the batch again with those events parked.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio_postgres::Transaction;

use super::sink::{Applied, Rejected, Sink};
use super::triage::Triage;
use crate::projection::Event;

/// The table of blocked keys (in the runtime's schema).
pub const BLOCKED_KEYS_DDL: &str = "
CREATE TABLE IF NOT EXISTS factline_projector_blocked_keys (
    projector  text        NOT NULL,
    version    integer     NOT NULL,
    topic      text        NOT NULL,
    key        text        NOT NULL,
    blocked_by text        NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, version, topic, key)
);
";

/// A sequence: the topic and key of an event.
type Sequence = (String, String);

/// An error message carried over from an earlier pass (its text is the dead letter's error).
#[derive(Debug)]
struct Carried(String);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Carried {}

/// `topic:partition:offset` of an event's record, as dead letters and redrives name it.
fn record_id(event: &Event) -> String {
    let o = &event.origin;
    format!("{}:{}:{}", o.topic, o.partition, o.offset)
}

fn sequence(event: &Event) -> Option<Sequence> {
    Some((event.origin.topic.to_string(), event.key.clone()?))
}

fn redriven_from(event: &Event) -> Option<&str> {
    event
        .headers
        .get(factline_schemas::redrive::HEADER_REDRIVEN_FROM)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Which events of a batch go to the sink, which are parked, and how the blocks change.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Positions (in the triage's events) handed to the sink, in log order.
    pub handed: Vec<usize>,
    /// Positions parked, with their dead letter's error.
    pub parked: BTreeMap<usize, String>,
    /// The blocks once the batch is applied: sequence → the record blocking it (`None`: the
    /// sequence was blocked and is released).
    pub blocks: HashMap<Sequence, Option<String>>,
}

/// Plans a batch (pure): `blocked` are the stored blocks of its sequences, `rejected` the
/// positions the sink rejected in an earlier pass. In log order, a rejected event blocks its
/// sequence; an event of a blocked sequence is parked, unless it is the redriven copy of the
/// blocking record, which releases the sequence and is handed to the sink.
pub fn plan(
    events: &[&Event],
    blocked: &HashMap<Sequence, String>,
    rejected: &BTreeSet<usize>,
) -> Plan {
    let mut state: HashMap<Sequence, String> = blocked.clone();
    let mut plan = Plan::default();
    for (pos, event) in events.iter().enumerate() {
        let seq = sequence(event);
        if rejected.contains(&pos) {
            if let Some(seq) = seq {
                let id = record_id(event);
                state.insert(seq.clone(), id.clone());
                plan.blocks.insert(seq, Some(id));
            }
            continue;
        }
        let Some(seq) = seq else {
            plan.handed.push(pos);
            continue;
        };
        match state.get(&seq) {
            Some(head) if redriven_from(event) == Some(head.as_str()) => {
                state.remove(&seq);
                plan.blocks.insert(seq, None);
                plan.handed.push(pos);
            }
            Some(head) => {
                plan.parked.insert(
                    pos,
                    format!(
                        "parked: key {} of {} waits for {head} to be redriven (sequenced dead letters)",
                        seq.1, seq.0
                    ),
                );
            }
            None => plan.handed.push(pos),
        }
    }
    plan
}

/// Whether a rejected position has a later position of its sequence among those handed: the
/// pass must be undone and planned again.
fn must_replan(events: &[&Event], handed: &[usize], rejected: &[usize]) -> bool {
    rejected.iter().any(|&r| {
        let seq = sequence(events[r]);
        seq.is_some() && handed.iter().any(|&h| h > r && sequence(events[h]) == seq)
    })
}

/// A sequenced batch failed.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError<E: std::error::Error + 'static> {
    /// Reading or writing the blocked keys failed.
    #[error("reading or writing the blocked keys failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The sink failed transiently.
    #[error("the sink failed")]
    Sink(#[source] E),
}

/// Applies a triaged batch through `sink` with sequenced dead-lettering: returns what the sink
/// did (rejections as positions in the triage's events) and the parked positions with their
/// errors. The blocked keys are updated in `tx`.
pub async fn apply<K: Sink>(
    sink: &K,
    tx: &mut Transaction<'_>,
    triage: &Triage<'_>,
) -> Result<(Applied, BTreeMap<usize, String>), SequenceError<K::Error>> {
    let spec = sink.spec();
    let (projector, version) = (spec.name.as_str(), spec.version as i32);
    let events = triage.events();
    let keys: Vec<String> = events
        .iter()
        .filter_map(|e| e.key.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut blocked = HashMap::new();
    if !keys.is_empty() {
        for row in tx
            .query(
                "SELECT topic, key, blocked_by FROM factline_projector_blocked_keys \
                 WHERE projector = $1 AND version = $2 AND key = ANY($3)",
                &[&projector, &version, &keys],
            )
            .await?
        {
            blocked.insert((row.get(0), row.get(1)), row.get(2));
        }
    }
    let mut rejected: BTreeMap<usize, String> = BTreeMap::new();
    let (applied, plan) = loop {
        let known: BTreeSet<usize> = rejected.keys().copied().collect();
        let plan = plan(&events, &blocked, &known);
        let mut savepoint = tx.savepoint("factline_sequenced").await?;
        let batch = triage.batch_of(&plan.handed);
        let applied = sink
            .apply(&mut savepoint, &batch)
            .await
            .map_err(SequenceError::Sink)?;
        let now_rejected: Vec<usize> = applied
            .rejected
            .iter()
            .map(|r| plan.handed[r.event])
            .collect();
        if must_replan(&events, &plan.handed, &now_rejected) {
            savepoint.rollback().await?;
            for (r, &pos) in applied.rejected.iter().zip(&now_rejected) {
                rejected.insert(pos, crate::error::chain(&*r.error));
            }
            continue;
        }
        savepoint.commit().await?;
        let mut plan = plan;
        for (r, &pos) in applied.rejected.iter().zip(&now_rejected) {
            rejected.insert(pos, crate::error::chain(&*r.error));
            if let Some(seq) = sequence(events[pos]) {
                plan.blocks.insert(seq, Some(record_id(events[pos])));
            }
        }
        break (applied, plan);
    };
    for (seq, blocked_by) in &plan.blocks {
        match blocked_by {
            Some(id) => {
                tx.execute(
                    "INSERT INTO factline_projector_blocked_keys \
                     (projector, version, topic, key, blocked_by) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (projector, version, topic, key) \
                     DO UPDATE SET blocked_by = EXCLUDED.blocked_by, since = now()",
                    &[&projector, &version, &seq.0, &seq.1, id],
                )
                .await?;
            }
            None => {
                tx.execute(
                    "DELETE FROM factline_projector_blocked_keys \
                     WHERE projector = $1 AND version = $2 AND topic = $3 AND key = $4",
                    &[&projector, &version, &seq.0, &seq.1],
                )
                .await?;
            }
        }
    }
    let applied = Applied {
        duplicates: applied.duplicates,
        rejected: rejected
            .into_iter()
            .map(|(event, error)| Rejected {
                event,
                error: Box::new(Carried(error)),
            })
            .collect(),
    };
    Ok((applied, plan.parked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Origin;
    use chrono::DateTime;
    use factline_schemas::Envelope;
    use uuid::Uuid;

    fn event(offset: i64, key: &str, redriven_from: Option<&str>) -> Event {
        Event {
            envelope: Envelope {
                event_id: Uuid::from_u128(offset as u128 + 1),
                event_type: "OrderPlaced".into(),
                command_id: Uuid::nil(),
                correlation_id: "c".into(),
                causation_id: None,
                occurred_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                traceparent: None,
            },
            data: serde_json::Value::Null,
            key: Some(key.into()),
            origin: Origin {
                topic: "orders".into(),
                partition: 0,
                offset,
            },
            timestamp: None,
            headers: redriven_from
                .map(|r| ("redriven_from", Some(r.as_bytes())))
                .into_iter()
                .collect(),
        }
    }

    fn seq(key: &str) -> Sequence {
        ("orders".into(), key.into())
    }

    #[test]
    fn a_rejected_event_parks_the_later_events_of_its_key_only() {
        let events = [
            event(0, "o1", None),
            event(1, "o2", None),
            event(2, "o1", None),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let plan = plan(&refs, &HashMap::new(), &BTreeSet::from([0]));
        assert_eq!(plan.handed, vec![1]);
        assert_eq!(plan.parked.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert!(plan.parked[&2].contains("waits for orders:0:0"));
        assert_eq!(plan.blocks[&seq("o1")], Some("orders:0:0".into()));
        assert!(must_replan(&refs, &[0, 1, 2], &[0]));
        assert!(!must_replan(&refs, &[0, 1, 2], &[2]));
    }

    #[test]
    fn a_blocked_key_parks_until_the_redriven_copy_of_its_blocker_releases_it() {
        let blocked = HashMap::from([(seq("o1"), "orders:0:0".to_owned())]);
        let events = [
            event(5, "o1", None),               // a live event: parked
            event(6, "o1", Some("orders:0:3")), // a copy of another record: parked
            event(7, "o1", Some("orders:0:0")), // the blocker's copy: released
            event(8, "o1", Some("orders:0:5")), // then the parked ones flow
            event(9, "o2", None),
        ];
        let refs: Vec<&Event> = events.iter().collect();
        let plan = plan(&refs, &blocked, &BTreeSet::new());
        assert_eq!(plan.parked.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(plan.handed, vec![2, 3, 4]);
        assert_eq!(plan.blocks[&seq("o1")], None);
        // the blocker's copy rejected again: it blocks the key itself
        let again = super::plan(&refs, &blocked, &BTreeSet::from([2]));
        assert_eq!(again.handed, vec![4]);
        assert_eq!(again.blocks[&seq("o1")], Some("orders:0:7".into()));
        assert!(again.parked[&3].contains("waits for orders:0:7"));
    }
}
