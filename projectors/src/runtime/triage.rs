//! The triage of a batch, done once for every sink: which records are behind the stored
//! positions (fenced), which are of types the projection does not consume, which are poison,
//! which repeat an event already in the batch, and how far each partition's position moves.
//! Pure: given the decoded records, the stored positions and what the sink did, it says what
//! to dead-letter, what to count and where the positions go.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::partitions::PerPartition;
use super::sink::{Applied, Batch};
use crate::dead_letter::DeadLetter;
use crate::decode::Decoded;
use crate::error::chain;
use crate::positions::{Advance, TopicPartition};
use crate::projection::Event;
use crate::record::Record;

/// A consumed record and what it decoded to.
#[derive(Debug)]
pub struct Item {
    /// The record as read.
    pub record: Record,
    /// What it is to the projection.
    pub decoded: Decoded,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// Events applied.
    pub applied: u64,
    /// Events skipped as already applied (same `event_id`).
    pub duplicates: u64,
    /// Records below the stored position (already covered by an earlier commit).
    pub behind: u64,
    /// Ignored records per event type.
    pub ignored: BTreeMap<String, u64>,
    /// Records dead-lettered (parked ones included).
    pub dead_lettered: u64,
    /// Events parked behind a dead-lettered event of their key (sequenced dead letters).
    pub parked: u64,
    /// The new next offset per partition.
    pub positions: HashMap<TopicPartition, i64>,
}

/// A batch sorted by what each record is to the sink.
#[derive(Debug)]
pub struct Triage<'a> {
    items: &'a [Item],
    high_watermarks: &'a HashMap<TopicPartition, i64>,
    /// Item index of each event handed to the sink (first copies, in log order).
    events: Vec<usize>,
    /// Item index of each record above the stored positions.
    fenced_in: Vec<usize>,
    /// Item index of a later copy of an event, and the position of its first copy in `events`.
    copies: Vec<(usize, usize)>,
    /// Item index of each poison record.
    poison: Vec<usize>,
    behind: u64,
    ignored: BTreeMap<String, u64>,
    /// Per partition: the last offset of the batch and when its record occurred.
    last: HashMap<TopicPartition, (i64, Option<DateTime<Utc>>)>,
}

/// What the runtime does once the sink applied a batch.
#[derive(Debug)]
pub struct Settled {
    /// The counts and new positions.
    pub outcome: Outcome,
    /// The records to dead-letter, in log order.
    pub letters: Vec<DeadLetter>,
    /// The positions to store.
    pub advances: Vec<(TopicPartition, Advance)>,
}

/// The partitions of a batch, sorted, each once.
pub fn partitions(items: &[Item]) -> Vec<TopicPartition> {
    let mut seen: PerPartition<'_, ()> = PerPartition::default();
    for item in items {
        seen.entry(
            &item.record.origin.topic,
            item.record.origin.partition,
            || (),
        );
    }
    let mut partitions: Vec<TopicPartition> = seen.into_owned().map(|(at, ())| at).collect();
    partitions.sort();
    partitions
}

impl<'a> Triage<'a> {
    /// Sorts a batch given the stored next offsets of its partitions and their ends as last
    /// seen by the consumer.
    pub fn new(
        items: &'a [Item],
        stored: &HashMap<TopicPartition, i64>,
        high_watermarks: &'a HashMap<TopicPartition, i64>,
    ) -> Triage<'a> {
        let mut triage = Triage {
            items,
            high_watermarks,
            events: Vec::new(),
            fenced_in: Vec::new(),
            copies: Vec::new(),
            poison: Vec::new(),
            behind: 0,
            ignored: BTreeMap::new(),
            last: HashMap::new(),
        };
        let mut first: HashMap<Uuid, usize> = HashMap::new();
        // per partition: its stored next offset, and its last record and when it occurred
        type Last = Option<(i64, Option<DateTime<Utc>>)>;
        let mut partitions: PerPartition<'a, (Option<i64>, Last)> = PerPartition::default();
        for (i, item) in items.iter().enumerate() {
            let origin = &item.record.origin;
            let (next, last) = partitions.entry(&origin.topic, origin.partition, || {
                let stored = stored.get(&(origin.topic.to_string(), origin.partition));
                (stored.copied(), None)
            });
            if next.is_some_and(|next| origin.offset < next) {
                triage.behind += 1;
                continue;
            }
            triage.fenced_in.push(i);
            let mut occurred_at = item
                .record
                .timestamp_ms
                .and_then(DateTime::<Utc>::from_timestamp_millis);
            match &item.decoded {
                Decoded::Ignored { event_type } => {
                    tracing::debug!(
                        event_type,
                        offset = origin.offset,
                        "event type not consumed, skipped"
                    );
                    *triage.ignored.entry(event_type.clone()).or_default() += 1;
                }
                Decoded::Poison { .. } => triage.poison.push(i),
                Decoded::Raw => {}
                Decoded::Event(event) => {
                    occurred_at = Some(event.envelope.occurred_at);
                    match first.get(&event.envelope.event_id) {
                        Some(&at) => triage.copies.push((i, at)),
                        None => {
                            first.insert(event.envelope.event_id, triage.events.len());
                            triage.events.push(i);
                        }
                    }
                }
            }
            let entry = last.get_or_insert((origin.offset, occurred_at));
            if origin.offset >= entry.0 {
                *entry = (origin.offset, occurred_at.or(entry.1));
            }
        }
        triage.last = partitions
            .into_owned()
            .filter_map(|(at, (_, last))| Some((at, last?)))
            .collect();
        triage
    }

    /// What the sink is handed.
    pub fn batch(&self) -> Batch<'a> {
        let records = self
            .fenced_in
            .iter()
            .map(|&i| &self.items[i].record)
            .collect();
        Batch::new(self.events(), records, self.high_watermarks)
    }

    /// The events the sink is handed by [`batch`](Triage::batch), in log order.
    pub fn events(&self) -> Vec<&'a Event> {
        let items = self.items;
        self.events
            .iter()
            .filter_map(|&i| match &items[i].decoded {
                Decoded::Event(event) => Some(&**event),
                _ => None,
            })
            .collect()
    }

    /// A batch of only the events at `positions` (in [`events`](Triage::events)); a sink's
    /// rejections then index `positions`.
    pub fn batch_of(&self, positions: &[usize]) -> Batch<'a> {
        let events = self.events();
        let chosen = positions.iter().map(|&p| events[p]).collect();
        let records = self
            .fenced_in
            .iter()
            .map(|&i| &self.items[i].record)
            .collect();
        Batch::new(chosen, records, self.high_watermarks)
    }

    /// Combines the triage with what the sink did: the counts, the dead letters (poison
    /// records, rejected events, and later copies of a rejected event, which share its
    /// verdict) and the positions, each partition's moved past its last record.
    pub fn settle(self, applied: Applied) -> Settled {
        self.settle_parked(applied, BTreeMap::new())
    }

    /// [`settle`](Triage::settle) with events parked by sequenced dead-lettering (positions in
    /// [`events`](Triage::events), with their errors): dead-lettered like rejected ones.
    pub fn settle_parked(self, applied: Applied, parked: BTreeMap<usize, String>) -> Settled {
        let items = self.items;
        let mut errors: BTreeMap<usize, String> = BTreeMap::new();
        for &i in &self.poison {
            if let Decoded::Poison { error } = &items[i].decoded {
                errors.insert(i, error.clone());
            }
        }
        let mut rejected: HashMap<usize, String> = HashMap::new();
        for r in &applied.rejected {
            if let Some(&i) = self.events.get(r.event) {
                let error = chain(&*r.error);
                errors.insert(i, error.clone());
                rejected.insert(r.event, error);
            }
        }
        let parked_count = parked.len() as u64;
        for (position, error) in parked {
            if let Some(&i) = self.events.get(position) {
                errors.insert(i, error.clone());
                rejected.insert(position, error);
            }
        }
        let mut copies = 0;
        for &(i, at) in &self.copies {
            match rejected.get(&at) {
                Some(error) => {
                    errors.insert(i, error.clone());
                }
                None => copies += 1,
            }
        }
        let letters: Vec<DeadLetter> = errors
            .into_iter()
            .map(|(i, error)| DeadLetter {
                record: items[i].record.clone(),
                error,
            })
            .collect();
        let mut outcome = Outcome {
            applied: (self.events.len() as u64)
                .saturating_sub(applied.duplicates)
                .saturating_sub(rejected.len() as u64),
            parked: parked_count,
            duplicates: applied.duplicates + copies,
            behind: self.behind,
            ignored: self.ignored,
            dead_lettered: letters.len() as u64,
            positions: HashMap::new(),
        };
        let mut advances = Vec::with_capacity(self.last.len());
        for (tp, (offset, last_event_at)) in self.last {
            outcome.positions.insert(tp.clone(), offset + 1);
            let advance = Advance {
                next_offset: offset + 1,
                high_watermark: self.high_watermarks.get(&tp).copied(),
                last_event_at,
            };
            advances.push((tp, advance));
        }
        advances.sort_by(|a, b| a.0.cmp(&b.0));
        Settled {
            outcome,
            letters,
            advances,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::Origin;
    use crate::runtime::sink::Rejected;
    use factline_schemas::Envelope;

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            origin: Origin {
                topic: "orders".into(),
                partition,
                offset,
            },
            key: None,
            payload: None,
            headers: Default::default(),
            timestamp_ms: Some(1_700_000_000_000 + offset),
        }
    }

    fn event(partition: i32, offset: i64, id: u128) -> Item {
        let record = record(partition, offset);
        let envelope = Envelope {
            event_id: Uuid::from_u128(id),
            event_type: "OrderPlaced".into(),
            command_id: Uuid::from_u128(id),
            correlation_id: "c".into(),
            causation_id: None,
            occurred_at: DateTime::from_timestamp(1_800_000_000 + offset, 0).unwrap(),
            traceparent: None,
        };
        let event = Event {
            envelope,
            data: serde_json::Value::Null,
            key: None,
            origin: record.origin.clone(),
            timestamp: None,
            headers: Default::default(),
        };
        Item {
            record,
            decoded: Decoded::Event(Box::new(event)),
        }
    }

    fn ignored(partition: i32, offset: i64) -> Item {
        Item {
            record: record(partition, offset),
            decoded: Decoded::Ignored {
                event_type: "OrderShipped".into(),
            },
        }
    }

    fn poison(partition: i32, offset: i64) -> Item {
        Item {
            record: record(partition, offset),
            decoded: Decoded::Poison {
                error: "undecodable value".into(),
            },
        }
    }

    fn ids(batch: &Batch<'_>) -> Vec<u128> {
        batch
            .events()
            .iter()
            .map(|e| e.envelope.event_id.as_u128())
            .collect()
    }

    #[test]
    fn records_below_the_stored_position_are_fenced_and_do_not_move_it() {
        let items = vec![event(0, 3, 1), event(0, 4, 2), event(1, 0, 3)];
        let stored = HashMap::from([(("orders".to_owned(), 0), 4)]);
        let high = HashMap::new();
        let triage = Triage::new(&items, &stored, &high);
        assert_eq!(ids(&triage.batch()), vec![2, 3]);
        assert_eq!(triage.batch().records().len(), 2);
        let settled = triage.settle(Applied::default());
        assert_eq!(settled.outcome.behind, 1);
        assert_eq!(settled.outcome.applied, 2);
        assert_eq!(
            settled.outcome.positions,
            HashMap::from([(("orders".to_owned(), 0), 5), (("orders".to_owned(), 1), 1)])
        );
    }

    #[test]
    fn ignored_types_and_poison_never_reach_the_sink_but_move_the_position() {
        let items = vec![ignored(0, 0), poison(0, 1), event(0, 2, 7), ignored(0, 3)];
        let high = HashMap::from([(("orders".to_owned(), 0), 10)]);
        let triage = Triage::new(&items, &HashMap::new(), &high);
        assert_eq!(ids(&triage.batch()), vec![7]);
        assert_eq!(triage.batch().high_watermark("orders", 0), Some(10));
        let settled = triage.settle(Applied::default());
        assert_eq!(settled.outcome.ignored["OrderShipped"], 2);
        assert_eq!(settled.letters.len(), 1);
        assert_eq!(settled.letters[0].record.origin.offset, 1);
        assert_eq!(settled.letters[0].error, "undecodable value");
        assert_eq!(settled.outcome.dead_lettered, 1);
        let (_, advance) = &settled.advances[0];
        assert_eq!(advance.next_offset, 4);
        assert_eq!(advance.high_watermark, Some(10));
        // the last record is an ignored one: its record time, not the event's
        assert_eq!(
            advance.last_event_at,
            DateTime::<Utc>::from_timestamp_millis(1_700_000_000_003)
        );
    }

    #[test]
    fn a_second_copy_in_the_batch_is_a_duplicate_and_the_sinks_own_are_added() {
        let items = vec![event(0, 0, 1), event(1, 0, 1), event(0, 1, 2)];
        let high = HashMap::new();
        let triage = Triage::new(&items, &HashMap::new(), &high);
        assert_eq!(ids(&triage.batch()), vec![1, 2]);
        let applied = Applied {
            duplicates: 1,
            ..Applied::default()
        };
        let settled = triage.settle(applied);
        assert_eq!(settled.outcome.duplicates, 2);
        assert_eq!(settled.outcome.applied, 1);
        assert!(settled.letters.is_empty());
    }

    #[test]
    fn a_rejected_event_is_dead_lettered_with_every_copy_in_log_order() {
        let items = vec![event(0, 0, 1), poison(0, 1), event(0, 2, 2), event(0, 3, 1)];
        let high = HashMap::new();
        let triage = Triage::new(&items, &HashMap::new(), &high);
        let applied = Applied {
            rejected: vec![Rejected {
                event: 0,
                error: Box::new(crate::error::ProjectionError::permanent("bad total")),
            }],
            ..Applied::default()
        };
        let settled = triage.settle(applied);
        let letters: Vec<(i64, &str)> = settled
            .letters
            .iter()
            .map(|l| (l.record.origin.offset, l.error.as_str()))
            .collect();
        assert_eq!(
            letters,
            vec![
                (0, "rejected by projection: bad total"),
                (1, "undecodable value"),
                (3, "rejected by projection: bad total"),
            ]
        );
        assert_eq!(settled.outcome.applied, 1);
        assert_eq!(settled.outcome.duplicates, 0);
        assert_eq!(settled.outcome.dead_lettered, 3);
    }

    fn raw(partition: i32, offset: i64) -> Item {
        Item {
            record: record(partition, offset),
            decoded: Decoded::Raw,
        }
    }

    #[test]
    fn a_sink_of_records_is_handed_every_fenced_record_and_nothing_is_dead_lettered() {
        let items = vec![raw(0, 0), raw(0, 1), raw(0, 2)];
        let stored = HashMap::from([(("orders".to_owned(), 0), 1)]);
        let high = HashMap::new();
        let triage = Triage::new(&items, &stored, &high);
        let batch = triage.batch();
        let offsets: Vec<i64> = batch.records().iter().map(|r| r.origin.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        assert!(batch.events().is_empty());
        let settled = triage.settle(Applied::default());
        assert!(settled.letters.is_empty());
        assert_eq!(settled.outcome.behind, 1);
        assert_eq!(settled.advances[0].1.next_offset, 3);
    }
}
