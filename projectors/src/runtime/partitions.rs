//! A value per partition of one batch, found for each record by its topic and partition as
//! borrowed from the record: no key is built (and no topic name copied) per record. A batch
//! holds a few partitions and runs of one partition's records, so the partition of the record
//! before is tried first and the others are searched in a short list.

use crate::positions::TopicPartition;

/// The partitions met in a batch, in the order first met, each with its value.
#[derive(Debug)]
pub struct PerPartition<'a, T> {
    entries: Vec<((&'a str, i32), T)>,
    last: usize,
}

impl<'a, T> Default for PerPartition<'a, T> {
    fn default() -> Self {
        PerPartition {
            entries: Vec::new(),
            last: 0,
        }
    }
}

impl<'a, T> PerPartition<'a, T> {
    /// The value of `topic`'s `partition`, made by `init` the first time it is asked for.
    pub fn entry(&mut self, topic: &'a str, partition: i32, init: impl FnOnce() -> T) -> &mut T {
        // records share their topic's name (`record::TopicNames`): the address decides first
        let is = |((t, p), _): &((&str, i32), T)| {
            *p == partition && (std::ptr::eq(*t, topic) || *t == topic)
        };
        if !self.entries.get(self.last).is_some_and(is) {
            self.last = match self.entries.iter().position(is) {
                Some(at) => at,
                None => {
                    self.entries.push(((topic, partition), init()));
                    self.entries.len() - 1
                }
            };
        }
        &mut self.entries[self.last].1
    }

    /// The partitions (their names copied once each) and their values, in the order first met.
    pub fn into_owned(self) -> impl Iterator<Item = (TopicPartition, T)> + use<'a, T> {
        self.entries
            .into_iter()
            .map(|((topic, partition), value)| ((topic.to_owned(), partition), value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_keeps_its_own_value_whatever_the_order_of_the_records() {
        let records = [
            ("orders", 0, 1),
            ("orders", 0, 2),
            ("orders", 1, 10),
            ("customers", 0, 100),
            ("orders", 0, 3),
            ("orders", 1, 20),
            ("customers", 0, 200),
        ];
        let mut sums: PerPartition<'_, i64> = PerPartition::default();
        for (topic, partition, n) in records {
            *sums.entry(topic, partition, || 0) += n;
        }
        let sums: Vec<(TopicPartition, i64)> = sums.into_owned().collect();
        assert_eq!(
            sums,
            vec![
                (("orders".to_owned(), 0), 6),
                (("orders".to_owned(), 1), 30),
                (("customers".to_owned(), 0), 300),
            ]
        );
    }

    #[test]
    fn a_value_is_made_once_per_partition() {
        let mut made = 0;
        let mut seen: PerPartition<'_, ()> = PerPartition::default();
        for (topic, partition) in [("a", 0), ("a", 1), ("a", 0), ("b", 0), ("a", 1)] {
            seen.entry(topic, partition, || made += 1);
        }
        assert_eq!(made, 3);
        assert_eq!(seen.into_owned().count(), 3);
    }
}
