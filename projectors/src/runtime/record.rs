//! An owned copy of a consumed Kafka record, kept in a batch until it is committed, its
//! headers in a compact form ([`Headers`]), and the topic names its records share
//! ([`TopicNames`]).

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers as _, Message};

use crate::projection::Origin;

/// A consumed record: origin, key, value bytes and headers, exactly as read.
#[derive(Debug, Clone)]
pub struct Record {
    /// Topic, partition and offset.
    pub origin: Origin,
    /// The key bytes.
    pub key: Option<Vec<u8>>,
    /// The value bytes.
    pub payload: Option<Vec<u8>>,
    /// The headers in order.
    pub headers: Headers,
    /// The broker or producer timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// Copies a message out of the consumer's buffer.
    pub fn from_message(message: &BorrowedMessage<'_>, topics: &mut TopicNames) -> Record {
        let headers = message
            .headers()
            .map(|headers| {
                // sized first, so the copy allocates each of its three parts once
                let (mut names, mut values) = (0, 0);
                for header in headers.iter() {
                    names += header.key.len();
                    values += header.value.map_or(0, <[u8]>::len);
                }
                let mut copy = Headers::with_capacity(headers.count(), names, values);
                for header in headers.iter() {
                    copy.push(header.key, header.value);
                }
                copy
            })
            .unwrap_or_default();
        Record {
            origin: Origin {
                topic: topics.get(message.topic()),
                partition: message.partition(),
                offset: message.offset(),
            },
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: message.timestamp().to_millis(),
        }
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The key as UTF-8 text, if it is.
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map(str::to_owned)
    }
}

/// The names of the topics a consumer reads, each held once: a record's [`Origin`] shares its
/// topic's name instead of holding a copy (an allocation, a copy and a free per record), and
/// records of one topic compare their topics by address first.
#[derive(Debug, Default)]
pub struct TopicNames {
    names: Vec<Arc<str>>,
}

impl TopicNames {
    /// The shared name `name`, kept from now on if it is new.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        match self.names.iter().find(|known| ***known == *name) {
            Some(known) => Arc::clone(known),
            None => {
                let known: Arc<str> = Arc::from(name);
                self.names.push(Arc::clone(&known));
                known
            }
        }
    }
}

/// A record's headers in their order (a name may repeat, a value may be absent), held in three
/// allocations whatever their number: the names, the values, and where each one ends. A
/// consumer copies every record's headers out of librdkafka's buffer; one `String` and one
/// `Vec` per header made that copy, and freeing it, a third of the archiver's CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    names: String,
    values: Vec<u8>,
    at: Vec<HeaderAt>,
}

/// Where one header's name ends in `names`, and its value's range in `values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderAt {
    name_end: usize,
    value: Option<(usize, usize)>,
}

impl Headers {
    /// No headers yet, with room for `count` whose names take `names` bytes and whose values
    /// take `values` bytes.
    pub fn with_capacity(count: usize, names: usize, values: usize) -> Headers {
        Headers {
            names: String::with_capacity(names),
            values: Vec::with_capacity(values),
            at: Vec::with_capacity(count),
        }
    }

    /// Appends a header.
    pub fn push(&mut self, name: &str, value: Option<&[u8]>) {
        self.names.push_str(name);
        let value = value.map(|bytes| {
            let start = self.values.len();
            self.values.extend_from_slice(bytes);
            (start, self.values.len())
        });
        self.at.push(HeaderAt {
            name_end: self.names.len(),
            value,
        });
    }

    /// The headers in order: name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        let starts = std::iter::once(0).chain(self.at.iter().map(|at| at.name_end));
        starts.zip(&self.at).map(|(start, at)| {
            (
                &self.names[start..at.name_end],
                at.value.map(|(from, to)| &self.values[from..to]),
            )
        })
    }

    /// The value of the first header with this name.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, Option<&'a [u8]>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>>(iter: I) -> Headers {
        let mut headers = Headers::default();
        for (name, value) in iter {
            headers.push(name, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_one_topic_share_its_name_and_other_topics_keep_theirs() {
        let mut names = TopicNames::default();
        let orders = names.get("orders");
        let again = names.get(&String::from("orders"));
        let customers = names.get("customers");
        assert!(Arc::ptr_eq(&orders, &again));
        assert_eq!(&*customers, "customers");
        assert!(!Arc::ptr_eq(&orders, &customers));
        assert!(Arc::ptr_eq(&customers, &names.get("customers")));
    }

    #[test]
    fn headers_keep_their_order_repeats_and_absent_values() {
        let pairs: [(&str, Option<&[u8]>); 5] = [
            ("event_id", Some(b"1")),
            ("empty", Some(b"")),
            ("none", None),
            ("event_id", Some(b"2")),
            ("", Some(b"x")),
        ];
        let headers: Headers = pairs.into_iter().collect();
        assert_eq!(headers.len(), 5);
        assert_eq!(headers.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(
            headers.get("event_id"),
            Some(&b"1"[..]),
            "the first one counts"
        );
        assert_eq!(headers.get("empty"), Some(&b""[..]));
        assert_eq!(headers.get("none"), None);
        assert_eq!(headers.get("missing"), None);
        assert!(Headers::default().is_empty());
        assert_eq!(Headers::default().iter().count(), 0);
    }

    #[test]
    fn headers_sized_up_front_hold_the_same_as_headers_grown() {
        let pairs: [(&str, Option<&[u8]>); 3] = [
            ("event_id", Some(b"0190")),
            ("none", None),
            ("trace", Some(b"00-ab")),
        ];
        let mut sized = Headers::with_capacity(3, 17, 9);
        for (name, value) in pairs {
            sized.push(name, value);
        }
        assert_eq!(sized, pairs.into_iter().collect::<Headers>());
        // a wrong size is only a wrong guess: the copy grows as it would have
        let mut small = Headers::with_capacity(0, 0, 0);
        for (name, value) in pairs {
            small.push(name, value);
        }
        assert_eq!(small, sized);
    }
}
