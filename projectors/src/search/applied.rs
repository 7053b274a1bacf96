//! The bounded list of event ids applied to a search document (`factline.applied`).
//!
//! Each entry is `"{occurred_at}|{event_id}"` (RFC 3339 with milliseconds, UTC), so entries sort
//! by the time the event occurred. A list keeps the [`APPLIED_MAX`] newest entries (by
//! `occurred_at`, then id): the top entries of a union do not depend on the order the events
//! arrived in, so a document stays the same whatever the arrival order. Entries written before
//! the bound existed (a bare event id) count as the oldest and are dropped first.
//!
//! # What the bound guarantees
//!
//! - The same Kafka record delivered again is never re-applied: positions fence it (records
//!   below a partition's stored position are skipped), whatever this list holds.
//! - The same event re-produced at another offset (a producer retry, a replay) is skipped if it
//!   is among the [`APPLIED_MAX`] newest events of that document, which covers every batch
//!   re-applied after a crash and every retry close in time.
//! - An older duplicate is applied again. Search projections must be order-safe and
//!   idempotent merges (the [`SearchProjection`](super::SearchProjection) contract: facts carry
//!   their timestamps and newer facts win), so re-applying it leaves the document as it is;
//!   a declarative `upsert` without a `newer` guard is the exception and may overwrite newer
//!   values with the duplicate's.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{APPLIED, BOOKKEEPING};

/// How many applied event ids a document keeps.
pub const APPLIED_MAX: usize = 64;

/// The list entry of an event.
pub fn entry(event_id: &str, occurred_at: DateTime<Utc>) -> String {
    format!(
        "{}|{event_id}",
        occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

fn id_of(entry: &str) -> &str {
    entry.rsplit_once('|').map_or(entry, |(_, id)| id)
}

/// The sort key of an entry: `(occurred_at text, id)`; a bare id has an empty time (oldest).
fn key(entry: &str) -> (&str, &str) {
    entry.rsplit_once('|').unwrap_or(("", entry))
}

/// The entries of a bookkeeping object (`{"applied": [...]}`).
pub fn entries(bookkeeping: Option<&Value>) -> BTreeSet<String> {
    bookkeeping
        .and_then(|b| b.get(APPLIED))
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a bookkeeping object lists the event id.
pub fn contains(bookkeeping: Option<&Value>, event_id: &str) -> bool {
    bookkeeping
        .and_then(|b| b.get(APPLIED))
        .and_then(Value::as_array)
        .is_some_and(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .any(|e| id_of(e) == event_id)
        })
}

/// A bookkeeping object holding the newest [`APPLIED_MAX`] of these entries (in sort order).
pub fn bookkeeping(entries: BTreeSet<String>) -> Value {
    let mut sorted: Vec<String> = entries.into_iter().collect();
    sorted.sort_by(|a, b| key(a).cmp(&key(b)));
    let start = sorted.len().saturating_sub(APPLIED_MAX);
    json!({ APPLIED: sorted[start..] })
}

/// The document's bookkeeping.
pub fn of(doc: &Value) -> Option<&Value> {
    doc.get(BOOKKEEPING)
}

/// The document with its bookkeeping replaced.
pub fn with(mut doc: Value, bookkeeping: Value) -> Value {
    if !doc.is_object() {
        doc = json!({});
    }
    doc[BOOKKEEPING] = bookkeeping;
    doc
}

/// Whether the document's `factline.applied` holds the event id.
pub fn has_applied(doc: &Value, event_id: &str) -> bool {
    contains(of(doc), event_id)
}

/// The document with the event added to `factline.applied` (the newest [`APPLIED_MAX`] kept,
/// sorted by time, so the document does not depend on the order events arrived in).
pub fn with_applied(doc: Value, event_id: &str, occurred_at: DateTime<Utc>) -> Value {
    let mut ids = entries(of(&doc));
    ids.insert(entry(event_id, occurred_at));
    with(doc, bookkeeping(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn keeps_the_newest_entries_whatever_the_arrival_order() {
        let all: Vec<String> = (0..(APPLIED_MAX as i64 + 10))
            .map(|i| entry(&format!("id-{i}"), at(i)))
            .collect();
        let forward = all.iter().fold(json!({}), |b, e| {
            let mut set = entries(Some(&b));
            set.insert(e.clone());
            bookkeeping(set)
        });
        let backward = all.iter().rev().fold(json!({}), |b, e| {
            let mut set = entries(Some(&b));
            set.insert(e.clone());
            bookkeeping(set)
        });
        assert_eq!(forward, backward);
        assert_eq!(forward[APPLIED].as_array().unwrap().len(), APPLIED_MAX);
        assert!(contains(Some(&forward), &format!("id-{}", APPLIED_MAX + 9)));
        assert!(!contains(Some(&forward), "id-0"));
    }

    #[test]
    fn bare_ids_of_older_documents_are_found_and_dropped_first() {
        let mut set = entries(Some(&json!({"applied": ["legacy"]})));
        assert!(contains(Some(&json!({"applied": ["legacy"]})), "legacy"));
        for i in 0..APPLIED_MAX as i64 {
            set.insert(entry(&format!("id-{i}"), at(i)));
        }
        let b = bookkeeping(set);
        assert!(!contains(Some(&b), "legacy"));
        assert!(contains(Some(&b), "id-0"));
    }

    #[test]
    fn applied_ids_are_a_set_sorted_by_time() {
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let doc = with_applied(json!({"a": 1}), "b", at(1));
        let doc = with_applied(doc, "a", at(2));
        let doc = with_applied(doc, "b", at(1));
        assert_eq!(
            doc["factline"]["applied"],
            json!(["2023-11-14T22:13:21.000Z|b", "2023-11-14T22:13:22.000Z|a"])
        );
        assert!(has_applied(&doc, "a"));
        assert!(!has_applied(&doc, "c"));
        assert_eq!(doc["a"], 1);
    }
}
