//! Where the archiver cuts a partition's records into objects.
//!
//! Records of one partition are gathered in offset order; an object is cut when it holds
//! `max_records` records or `max_bytes` bytes of keys, values and headers, and when the
//! archiver has caught up with the partition ([`Segmenter::flush`]), so the newest records do
//! not wait for more traffic. Cutting never looks at the wall clock. Whatever the cut, a
//! retried write cannot make a second copy: objects are named by their first offset and
//! written put-if-absent, and the archiver adopts an object that is already there.

use std::collections::BTreeMap;

use crate::record::ArchivedRecord;

/// The cut rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutRules {
    /// Records per object at most.
    pub max_records: usize,
    /// Bytes (keys, values, headers) per object at most; an object always holds at least one
    /// record, however large.
    pub max_bytes: usize,
}

impl Default for CutRules {
    fn default() -> CutRules {
        CutRules {
            max_records: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Records of one partition waiting to be cut, and where the next object starts.
#[derive(Debug, Default)]
struct Pending {
    /// The first offset the next object covers.
    start: i64,
    records: Vec<ArchivedRecord>,
    bytes: usize,
}

/// The records of one object to write: it covers `first_offset` to its last record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The topic of the records.
    pub topic: String,
    /// The partition of the records.
    pub partition: i32,
    /// The first offset the object covers.
    pub first_offset: i64,
    /// The records, in offset order.
    pub records: Vec<ArchivedRecord>,
}

/// Gathers records per partition and cuts them into objects by [`CutRules`].
#[derive(Debug)]
pub struct Segmenter {
    rules: CutRules,
    partitions: BTreeMap<(String, i32), Pending>,
}

fn size(record: &ArchivedRecord) -> usize {
    record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + record
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

impl Segmenter {
    /// A segmenter with nothing pending.
    pub fn new(rules: CutRules) -> Segmenter {
        Segmenter {
            rules,
            partitions: BTreeMap::new(),
        }
    }

    /// Where `topic`'s `partition` continues: the first offset the next object covers (the
    /// manifest's next offset, or the partition's start). Drops what is pending for it.
    pub fn resume(&mut self, topic: &str, partition: i32, start: i64) {
        self.partitions.insert(
            (topic.to_owned(), partition),
            Pending {
                start,
                ..Pending::default()
            },
        );
    }

    /// Forgets a partition (revoked from this archiver).
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }

    /// Adds a record; returns the objects it completes. Records below the partition's start
    /// (already archived: a redelivery) are skipped. A partition never resumed starts at its
    /// first record.
    pub fn push(&mut self, record: ArchivedRecord) -> Vec<Cut> {
        let rules = self.rules;
        let key = (record.topic.clone(), record.partition);
        let pending = self.partitions.entry(key).or_insert_with(|| Pending {
            start: record.offset,
            ..Pending::default()
        });
        let next = pending
            .records
            .last()
            .map_or(pending.start, |last| last.offset + 1);
        if record.offset < next {
            return Vec::new();
        }
        let mut cuts = Vec::new();
        let record_size = size(&record);
        if !pending.records.is_empty() && pending.bytes + record_size > rules.max_bytes {
            cuts.extend(cut(pending));
        }
        pending.bytes += record_size;
        pending.records.push(record);
        if pending.records.len() >= rules.max_records || pending.bytes >= rules.max_bytes {
            cuts.extend(cut(pending));
        }
        cuts
    }

    /// Cuts everything pending (the archiver has caught up with these partitions).
    pub fn flush(&mut self) -> Vec<Cut> {
        self.partitions.values_mut().filter_map(cut).collect()
    }

    /// The first offset the next object of a partition covers, if the partition is known.
    pub fn next_start(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(topic.to_owned(), partition))
            .map(|p| p.start)
    }
}

/// The pending records as one object; the partition then continues after its last record.
fn cut(pending: &mut Pending) -> Option<Cut> {
    let last = pending.records.last()?.offset;
    let records = std::mem::take(&mut pending.records);
    let first_offset = pending.start;
    pending.start = last + 1;
    pending.bytes = 0;
    Some(Cut {
        topic: records[0].topic.clone(),
        partition: records[0].partition,
        first_offset,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, size: usize) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition,
            offset,
            timestamp_ms: None,
            key: None,
            value: Some(vec![0; size]),
            headers: Vec::new(),
        }
    }

    fn spans(cuts: &[Cut]) -> Vec<(i32, i64, i64, usize)> {
        cuts.iter()
            .map(|c| {
                let last = c.records.last().unwrap().offset;
                (c.partition, c.first_offset, last, c.records.len())
            })
            .collect()
    }

    #[test]
    fn objects_are_cut_by_count_and_chain_without_gaps() {
        let mut s = Segmenter::new(CutRules {
            max_records: 3,
            max_bytes: 1 << 20,
        });
        s.resume("t", 0, 0);
        let mut cuts = Vec::new();
        // offset 4 has no record (a transaction marker): the chain still has no gap
        for offset in [0, 1, 2, 3, 5, 6, 7] {
            cuts.extend(s.push(record(0, offset, 1)));
        }
        assert_eq!(spans(&cuts), vec![(0, 0, 2, 3), (0, 3, 6, 3)]);
        assert_eq!(spans(&s.flush()), vec![(0, 7, 7, 1)]);
        assert!(s.flush().is_empty());
        assert_eq!(s.next_start("t", 0), Some(8));
    }

    #[test]
    fn a_large_record_closes_the_object_before_it_and_redeliveries_are_skipped() {
        let mut s = Segmenter::new(CutRules {
            max_records: 100,
            max_bytes: 10,
        });
        s.resume("t", 1, 5);
        assert!(
            s.push(record(1, 4, 1)).is_empty(),
            "below the start: archived already"
        );
        assert!(s.push(record(1, 5, 4)).is_empty());
        let cuts = s.push(record(1, 6, 20));
        assert_eq!(spans(&cuts), vec![(1, 5, 5, 1), (1, 6, 6, 1)]);
        assert!(s.push(record(1, 6, 1)).is_empty(), "a redelivery");
        s.push(record(1, 7, 1));
        assert_eq!(spans(&s.flush()), vec![(1, 7, 7, 1)]);
    }

    #[test]
    fn partitions_are_cut_apart_and_a_revoked_one_is_forgotten() {
        let mut s = Segmenter::new(CutRules::default());
        s.push(record(0, 10, 1));
        s.push(record(1, 20, 1));
        s.push(record(2, 30, 1));
        s.forget("t", 2);
        assert_eq!(spans(&s.flush()), vec![(0, 10, 10, 1), (1, 20, 20, 1)]);
    }
}
