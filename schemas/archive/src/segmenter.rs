//! Where the archiver cuts a partition's records into objects: an object holds at most
//! `max_records` records and `max_bytes` bytes of keys, values and headers (but always at
//! least one record, however large). The archiver also cuts at the end of each batch, so the
//! newest records do not wait for more traffic. Whatever the cut, a retried write cannot make
//! a second copy: objects are named by their first offset and written put-if-absent, and the
//! archiver adopts an object that is already there.

use crate::record::LogRecord;

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

/// The bytes of a record that count towards `max_bytes`.
pub fn size(record: &impl LogRecord) -> usize {
    record.key().map_or(0, <[u8]>::len)
        + record.value().map_or(0, <[u8]>::len)
        + record
            .headers()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len))
            .sum::<usize>()
}

/// How many of `records` (in offset order) go into the next object: at least one when there
/// is any, then as many as `rules` allow.
pub fn cut_len<R: LogRecord>(records: &[R], rules: CutRules) -> usize {
    let mut bytes = 0;
    for (i, record) in records.iter().enumerate() {
        bytes += size(record);
        if i > 0 && (i >= rules.max_records || bytes > rules.max_bytes) {
            return i;
        }
    }
    records.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArchivedRecord;

    fn record(offset: i64, size: usize) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition: 0,
            offset,
            timestamp_ms: None,
            key: None,
            value: Some(vec![0; size]),
            headers: Vec::new(),
        }
    }

    fn rules(max_records: usize, max_bytes: usize) -> CutRules {
        CutRules {
            max_records,
            max_bytes,
        }
    }

    #[test]
    fn objects_are_cut_by_count_and_by_size() {
        let records: Vec<_> = (0..7).map(|o| record(o, 1)).collect();
        assert_eq!(cut_len(&records, rules(3, 1 << 20)), 3);
        assert_eq!(cut_len(&records[6..], rules(3, 1 << 20)), 1);
        assert_eq!(cut_len(&records, rules(100, 4)), 4);
        assert_eq!(cut_len::<ArchivedRecord>(&[], rules(3, 3)), 0);
    }

    #[test]
    fn a_record_larger_than_the_limit_is_an_object_of_its_own() {
        let records = [record(0, 1), record(1, 50), record(2, 1)];
        assert_eq!(cut_len(&records, rules(100, 10)), 1);
        assert_eq!(cut_len(&records[1..], rules(100, 10)), 1);
        assert_eq!(cut_len(&records[2..], rules(100, 10)), 1);
    }
}
