//! Step 2 of a search batch, the write rounds: the target documents are read in realtime
//! (`_mget`; documents [written once](super::SearchProjection::written_once) are taken as
//! absent in the first round instead), each one's events are applied in memory (events whose
//! id is in the document's `factline.applied` are skipped; a missing document starts from its
//! tombstone's ids), and changed documents are written in bounded `_bulk` requests with
//! `if_seq_no`/`if_primary_term` (`create` for new ones). A document the projection deletes
//! first gets a **tombstone** (its applied ids, in the version's tombstone index, which no
//! alias points at), then is deleted: a re-delivered older event finds its id in the tombstone
//! and does not recreate the document. A 409 re-reads that document and applies again; 429/5xx
//! fail the batch (the runtime retries it with backoff); a document Elasticsearch rejects
//! (400…) is retried one event at a time and the event it fails on is rejected (the runtime
//! dead-letters it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};

use super::applied;
use super::client::{BulkOp, ItemResult, Stored};
use super::index::{tombstone_id, Indices};
use super::sink::{DocumentRejected, SearchSinkError};
use super::store::{self, DocumentStore};
use super::{DocRef, SearchProjection};
use crate::error::{Cause, ProjectionError};
use crate::projection::Event;
use crate::runtime::sink::{Applied, Rejected};

/// Rounds of re-reading after conflicts before the batch is failed (and retried later).
pub const MAX_ROUNDS: usize = 50;

/// One document of a write round: as read, as computed, and the events newly applied.
pub struct Computed {
    /// The document.
    pub doc_ref: DocRef,
    /// As read.
    pub stored: Option<Stored>,
    /// As computed (`None`: absent).
    pub new: Option<Value>,
    /// The events newly applied to it (positions in the batch's events).
    pub applied: Vec<usize>,
    /// The bookkeeping a deleted (or never created) document keeps in its tombstone.
    gone: Option<Value>,
}

/// What a write round sends for one document.
struct Planned {
    doc_ref: DocRef,
    stored: Option<Stored>,
    /// Whether the document exists after the batch; its new state, when written, is in
    /// `main` (moved there, not copied).
    present: bool,
    applied: Vec<usize>,
    tombstone: Option<BulkOp>,
    main: Option<BulkOp>,
}

/// What the search sink works with during one batch: the projection, its versioned indices and
/// the store.
#[derive(Debug)]
pub struct Writer<'a, P, S> {
    /// The projection.
    pub projection: &'a P,
    /// Its indices.
    pub indices: &'a Indices,
    /// Where documents live.
    pub store: &'a S,
}

/// A document Elasticsearch refused: the event is dead-lettered if it was the only one
/// applied, otherwise the document is retried one event at a time to find the offending one.
fn refused(
    doc_ref: &DocRef,
    applied: &[usize],
    message: &str,
    rejected: &mut BTreeMap<usize, Cause>,
    careful: &mut HashSet<DocRef>,
) {
    if let [only] = applied {
        tracing::warn!(index = %doc_ref.index, id = %doc_ref.id, error = %message,
            "document rejected by elasticsearch");
        rejected.insert(
            *only,
            Box::new(DocumentRejected {
                index: doc_ref.index.clone(),
                id: doc_ref.id.clone(),
                message: message.to_owned(),
            }),
        );
    } else {
        careful.insert(doc_ref.clone());
    }
}

impl<P: SearchProjection, S: DocumentStore> Writer<'_, P, S> {
    /// Steps 1 to 3 of a batch ([`super::sink`]): the documents each event targets, the
    /// write rounds, the join. Returns what the runtime needs and whether the main index was
    /// written (then it must be refreshed before the positions are stored).
    pub async fn apply(&self, events: &[&Event]) -> Result<(Applied, bool), SearchSinkError> {
        let mut rejected: BTreeMap<usize, Cause> = BTreeMap::new();
        let mut targets: BTreeMap<DocRef, Vec<usize>> = BTreeMap::new();
        for (i, event) in events.iter().enumerate() {
            match self.projection.targets(event) {
                Ok(refs) => {
                    for r in refs {
                        targets.entry(r).or_default().push(i);
                    }
                }
                Err(e @ ProjectionError::Permanent(_)) => {
                    rejected.insert(i, Box::new(e));
                }
                Err(e @ ProjectionError::Transient(_)) => {
                    return Err(SearchSinkError::Projection(e))
                }
            }
        }
        let started = std::time::Instant::now();
        let mut newly = HashSet::new();
        let mut main_written = false;
        let finals = self
            .write(
                &targets,
                events,
                &mut rejected,
                &mut newly,
                &mut main_written,
            )
            .await?;
        let write_ms = started.elapsed().as_millis() as u64;
        let documents = finals.len();
        if let Some(join) = self.projection.join() {
            let enriched = self.join(&join, finals).await?;
            main_written |= enriched > 0;
            tracing::debug!(enriched, "documents enriched");
        }
        tracing::debug!(
            documents,
            write_ms,
            join_ms = started.elapsed().as_millis() as u64 - write_ms,
            "search batch written"
        );
        let duplicates = (0..events.len())
            .filter(|i| !newly.contains(i) && !rejected.contains_key(i))
            .count() as u64;
        let rejected = rejected
            .into_iter()
            .map(|(event, error)| Rejected { event, error })
            .collect();
        Ok((
            Applied {
                duplicates,
                rejected,
            },
            main_written,
        ))
    }

    /// These documents as stored now (realtime), `None` for missing ones.
    pub async fn mget(&self, refs: &[DocRef]) -> Result<Vec<Option<Stored>>, SearchSinkError> {
        let docs: Vec<(String, String)> = refs
            .iter()
            .map(|r| (self.indices.index(&r.index), r.id.clone()))
            .collect();
        Ok(store::mget(self.store, &docs).await?)
    }

    /// The documents as a write round starts from: as stored now, except that the first round
    /// takes documents [written once](SearchProjection::written_once) as absent without reading
    /// them (one that exists answers its `create` with 409 and is read in the next round).
    async fn current(
        &self,
        refs: &[DocRef],
        first_round: bool,
    ) -> Result<Vec<Option<Stored>>, SearchSinkError> {
        let unread = |r: &DocRef| {
            first_round && !self.projection.deletes() && self.projection.written_once(&r.index)
        };
        let read: Vec<DocRef> = refs.iter().filter(|r| !unread(r)).cloned().collect();
        let mut found = self.mget(&read).await?.into_iter();
        Ok(refs
            .iter()
            .map(|r| {
                if unread(r) {
                    None
                } else {
                    found.next().flatten()
                }
            })
            .collect())
    }

    /// The tombstones of these documents, where there are some.
    pub async fn tombstones(
        &self,
        refs: &[DocRef],
    ) -> Result<HashMap<DocRef, Stored>, SearchSinkError> {
        let index = self.indices.tombstones();
        let docs: Vec<(String, String)> = refs
            .iter()
            .map(|r| (index.clone(), tombstone_id(&r.index, &r.id)))
            .collect();
        let found = store::mget(self.store, &docs).await?;
        Ok(refs
            .iter()
            .cloned()
            .zip(found)
            .filter_map(|(r, s)| s.map(|s| (r, s)))
            .collect())
    }

    /// Sends operations in bounded `_bulk` requests; one result per operation, in order.
    pub async fn bulk(&self, ops: &[BulkOp]) -> Result<Vec<ItemResult>, SearchSinkError> {
        Ok(store::bulk(self.store, ops).await?)
    }

    /// Applies the batch's events to one document; returns the new state, the events newly
    /// applied (in `careful` mode at most one) and, if the document ends absent, what it keeps
    /// in its tombstone. A missing document starts from its tombstone's applied ids, so an
    /// event it already applied before it was deleted is skipped, not applied again.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    fn fold(
        &self,
        doc_ref: DocRef,
        stored: Option<Stored>,
        tombstone: Option<&Value>,
        indices: &[usize],
        events: &[&Event],
        rejected: &mut BTreeMap<usize, Cause>,
        careful: bool,
    ) -> Result<Computed, SearchSinkError> {
        let mut doc = stored.as_ref().map(|s| s.source.clone());
        let mut gone = match doc {
            Some(_) => None,
            None => tombstone.and_then(applied::of).cloned(),
        };
        let mut newly = Vec::new();
        for &i in indices {
            if rejected.contains_key(&i) {
                continue;
            }
            let event = events[i];
            let id = event.envelope.event_id.to_string();
            let memory = match &doc {
                Some(d) => applied::of(d),
                None => gone.as_ref(),
            };
            if applied::contains(memory, &id) {
                continue;
            }
            let mut ids = applied::entries(memory);
            ids.insert(applied::entry(&id, event.envelope.occurred_at));
            match self.projection.apply(&doc_ref, doc.clone(), event) {
                Ok(Some(new)) => {
                    doc = Some(applied::with(new, applied::bookkeeping(ids)));
                    gone = None;
                }
                Ok(None) => {
                    doc = None;
                    gone = Some(applied::bookkeeping(ids));
                }
                Err(e @ ProjectionError::Permanent(_)) => {
                    rejected.insert(i, Box::new(e));
                    continue;
                }
                Err(e @ ProjectionError::Transient(_)) => {
                    return Err(SearchSinkError::Projection(e))
                }
            }
            newly.push(i);
            if careful {
                break;
            }
        }
        Ok(Computed {
            doc_ref,
            stored,
            new: doc,
            applied: newly,
            gone,
        })
    }

    /// The writes of one computed document: its tombstone (when it ends absent) and the main
    /// document's create, conditional replace or conditional delete.
    fn plan(&self, computed: Computed, tombstones: &HashMap<DocRef, Stored>) -> Planned {
        let Computed {
            doc_ref,
            stored,
            new,
            applied,
            gone,
        } = computed;
        let index = self.indices.index(&doc_ref.index);
        let id = doc_ref.id.clone();
        let tombstone = match (&new, gone) {
            (None, Some(bookkeeping)) if !applied.is_empty() => {
                let index = self.indices.tombstones();
                let id = tombstone_id(&doc_ref.index, &doc_ref.id);
                let doc = applied::with(json!({}), bookkeeping);
                Some(match tombstones.get(&doc_ref) {
                    Some(t) if t.source == doc => None,
                    Some(t) => Some(BulkOp::Replace {
                        index,
                        id,
                        doc,
                        seq_no: t.seq_no,
                        primary_term: t.primary_term,
                    }),
                    None => Some(BulkOp::Create { index, id, doc }),
                })
                .flatten()
            }
            _ => None,
        };
        let present = new.is_some();
        let main = match (&stored, new) {
            _ if applied.is_empty() => None,
            (None, Some(doc)) => Some(BulkOp::Create { index, id, doc }),
            (Some(s), Some(doc)) if doc != s.source => Some(BulkOp::Replace {
                index,
                id,
                doc,
                seq_no: s.seq_no,
                primary_term: s.primary_term,
            }),
            (Some(s), None) => Some(BulkOp::Delete {
                index,
                id,
                seq_no: s.seq_no,
                primary_term: s.primary_term,
            }),
            _ => None,
        };
        Planned {
            doc_ref,
            stored,
            present,
            applied,
            tombstone,
            main,
        }
    }

    /// Step 2 of the module docs: the final state of every target document.
    async fn write(
        &self,
        targets: &BTreeMap<DocRef, Vec<usize>>,
        events: &[&Event],
        rejected: &mut BTreeMap<usize, Cause>,
        newly: &mut HashSet<usize>,
        main_written: &mut bool,
    ) -> Result<BTreeMap<DocRef, Option<Stored>>, SearchSinkError> {
        let mut pending: BTreeSet<DocRef> = targets.keys().cloned().collect();
        let mut careful: HashSet<DocRef> = HashSet::new();
        let mut finals = BTreeMap::new();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > MAX_ROUNDS {
                return Err(SearchSinkError::KeptChanging {
                    documents: pending.len(),
                });
            }
            let refs: Vec<DocRef> = pending.iter().cloned().collect();
            let current = self.current(&refs, round == 1).await?;
            let missing: Vec<DocRef> = if self.projection.deletes() {
                refs.iter()
                    .zip(&current)
                    .filter(|(_, stored)| stored.is_none())
                    .map(|(r, _)| r.clone())
                    .collect()
            } else {
                Vec::new()
            };
            let mut tombstones = self.tombstones(&missing).await?;
            let looked_up: HashSet<DocRef> = missing.into_iter().collect();
            let mut computed = Vec::with_capacity(refs.len());
            for (doc_ref, stored) in refs.into_iter().zip(current) {
                let tombstone = tombstones.get(&doc_ref).map(|t| &t.source);
                let careful_now = careful.contains(&doc_ref);
                let indices = &targets[&doc_ref];
                computed.push(self.fold(
                    doc_ref,
                    stored,
                    tombstone,
                    indices,
                    events,
                    rejected,
                    careful_now,
                )?);
            }
            self.pre_enrich(&mut computed).await?;
            // documents deleted (or left absent) now: their tombstones are read for a
            // conditional write
            let deleted: Vec<DocRef> = computed
                .iter()
                .filter(|c| c.new.is_none() && !c.applied.is_empty())
                .filter(|c| !looked_up.contains(&c.doc_ref))
                .map(|c| c.doc_ref.clone())
                .collect();
            if !deleted.is_empty() {
                tombstones.extend(self.tombstones(&deleted).await?);
            }
            let mut plans: Vec<Planned> = computed
                .into_iter()
                .map(|c| self.plan(c, &tombstones))
                .collect();

            // Tombstones first: a document is deleted only once its tombstone remembers what
            // it had applied (a crash in between leaves both, and the retry deletes again).
            let tombstone_ops: Vec<BulkOp> =
                plans.iter().filter_map(|p| p.tombstone.clone()).collect();
            let mut results = self.bulk(&tombstone_ops).await?.into_iter();
            let mut blocked: HashSet<DocRef> = HashSet::new();
            for plan in plans.iter().filter(|p| p.tombstone.is_some()) {
                match results.next() {
                    Some(ItemResult::Done { .. }) => {}
                    Some(ItemResult::Conflict) => {
                        tracing::debug!(index = %plan.doc_ref.index, id = %plan.doc_ref.id,
                            "tombstone changed meanwhile, re-reading");
                        blocked.insert(plan.doc_ref.clone());
                    }
                    Some(ItemResult::Transient(message)) => {
                        return Err(SearchSinkError::Item {
                            action: "writing the tombstone of",
                            index: plan.doc_ref.index.clone(),
                            id: plan.doc_ref.id.clone(),
                            message,
                        })
                    }
                    Some(ItemResult::Permanent(message)) => {
                        refused(
                            &plan.doc_ref,
                            &plan.applied,
                            &message,
                            rejected,
                            &mut careful,
                        );
                        blocked.insert(plan.doc_ref.clone());
                    }
                    None => return Err(SearchSinkError::ShortBulk),
                }
            }

            // the documents move into the request and back out of it once written
            let mut main_ops: Vec<BulkOp> = Vec::new();
            let mut sent: Vec<bool> = Vec::with_capacity(plans.len());
            for plan in &mut plans {
                let op = plan
                    .main
                    .take()
                    .filter(|_| !blocked.contains(&plan.doc_ref));
                sent.push(op.is_some());
                main_ops.extend(op);
            }
            let mut results = self.bulk(&main_ops).await?.into_iter();
            let mut written = main_ops.into_iter();
            for (plan, sent) in plans.into_iter().zip(sent) {
                if blocked.contains(&plan.doc_ref) {
                    continue;
                }
                let Planned {
                    doc_ref,
                    stored,
                    present,
                    applied,
                    tombstone,
                    main: _,
                } = plan;
                let op = if sent { written.next() } else { None };
                let result = match op {
                    Some(_) => results.next().ok_or(SearchSinkError::ShortBulk)?,
                    None if tombstone.is_some() => ItemResult::Done {
                        seq_no: 0,
                        primary_term: 0,
                    },
                    None => {
                        // nothing to write: unchanged, or only duplicates
                        newly.extend(applied);
                        pending.remove(&doc_ref);
                        finals.insert(doc_ref, stored.filter(|_| present));
                        continue;
                    }
                };
                match result {
                    ItemResult::Done {
                        seq_no,
                        primary_term,
                    } => {
                        newly.extend(applied);
                        *main_written |= doc_ref.index == self.indices.main_base();
                        if careful.contains(&doc_ref) {
                            continue; // one event at a time: read again for the next one
                        }
                        pending.remove(&doc_ref);
                        // a create or replace carries the new state; a delete, none
                        let stored = op.and_then(BulkOp::into_doc).map(|source| Stored {
                            source,
                            seq_no,
                            primary_term,
                        });
                        finals.insert(doc_ref, stored);
                    }
                    ItemResult::Conflict => {
                        tracing::debug!(index = %doc_ref.index, id = %doc_ref.id,
                            "document changed meanwhile, re-reading");
                    }
                    ItemResult::Transient(message) => {
                        return Err(SearchSinkError::Item {
                            action: "writing",
                            index: doc_ref.index.clone(),
                            id: doc_ref.id.clone(),
                            message,
                        })
                    }
                    ItemResult::Permanent(message) => {
                        refused(&doc_ref, &applied, &message, rejected, &mut careful);
                    }
                }
            }
        }
        Ok(finals)
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The write rounds over [`MemoryStore`](super::super::memory::MemoryStore): given events,
    //! the documents that result.

    use chrono::DateTime;
    use factline_schemas::Envelope;
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::error::chain;
    use crate::projection::Origin;
    use crate::search::memory::MemoryStore;
    use crate::search::IndexSpec;

    /// The methods every test projection shares: its name, version 1, topic `t`, no filter on
    /// event types.
    macro_rules! basics {
        ($name:literal) => {
            fn name(&self) -> &str {
                $name
            }
            fn version(&self) -> u32 {
                1
            }
            fn topics(&self) -> Vec<String> {
                vec!["t".into()]
            }
            fn event_types(&self) -> Vec<String> {
                vec![]
            }
        };
    }
    pub(crate) use basics;

    /// One index of that base name, without a mapping.
    fn one_index(base: &str) -> Vec<IndexSpec> {
        vec![IndexSpec {
            base: base.into(),
            body: json!({}),
        }]
    }

    /// A test projection: `Added` puts `value` into the document's sorted `values`, `Removed`
    /// deletes the document, `Refused` makes a document the store refuses, `Bad` is rejected
    /// by `apply` and `Invalid` by `targets`.
    pub struct Tally;

    impl SearchProjection for Tally {
        basics!("tally");
        fn indices(&self) -> Vec<IndexSpec> {
            one_index("tally")
        }
        fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
            if event.event_type() == "Invalid" {
                return Err(ProjectionError::permanent("no document"));
            }
            Ok(vec![DocRef::new(
                "tally",
                event.key.clone().unwrap_or_default(),
            )])
        }
        fn apply(
            &self,
            doc: &DocRef,
            current: Option<Value>,
            event: &Event,
        ) -> Result<Option<Value>, ProjectionError> {
            let mut current = current.unwrap_or_else(|| json!({"id": doc.id, "values": []}));
            match event.event_type() {
                "Added" => {
                    let mut values: BTreeSet<i64> = current["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64)
                        .collect();
                    values.extend(event.data["value"].as_i64());
                    current["values"] = json!(values);
                    Ok(Some(current))
                }
                "Removed" => Ok(None),
                "Refused" => {
                    current["refuse"] = json!(true);
                    Ok(Some(current))
                }
                _ => Err(ProjectionError::permanent("bad event")),
            }
        }
    }

    /// An event of type `event_type` for document `key`, id `id` (its time grows with the id).
    pub fn event(id: u128, event_type: &str, key: &str, data: Value) -> Event {
        Event {
            envelope: Envelope {
                event_id: Uuid::from_u128(id),
                event_type: event_type.into(),
                command_id: Uuid::from_u128(id),
                correlation_id: "c".into(),
                causation_id: None,
                occurred_at: DateTime::from_timestamp(1_800_000_000 + id as i64, 0).unwrap(),
                traceparent: None,
            },
            data,
            key: Some(key.into()),
            origin: Origin {
                topic: "t".into(),
                partition: 0,
                offset: id as i64,
            },
            timestamp: None,
            headers: Default::default(),
        }
    }

    fn added(id: u128, key: &str, value: i64) -> Event {
        event(id, "Added", key, json!({ "value": value }))
    }

    fn of_type(id: u128, event_type: &str, key: &str) -> Event {
        event(id, event_type, key, json!({}))
    }

    /// Applies events as one batch; returns what the runtime gets.
    pub async fn apply<P: SearchProjection>(
        projection: &P,
        store: &MemoryStore,
        events: &[Event],
    ) -> Applied {
        let indices = Indices::new("", 1, projection.indices());
        let writer = Writer {
            projection,
            indices: &indices,
            store,
        };
        let events: Vec<&Event> = events.iter().collect();
        writer.apply(&events).await.unwrap().0
    }

    fn values(store: &MemoryStore, id: &str) -> Option<Value> {
        store.get("tally_v1", id).map(|d| d["values"].clone())
    }

    #[tokio::test]
    async fn a_batch_writes_each_document_once_and_a_replay_changes_nothing() {
        let store = MemoryStore::default();
        let events = [added(1, "a", 1), added(2, "a", 2), added(3, "b", 3)];
        let applied = apply(&Tally, &store, &events).await;
        assert_eq!(applied.duplicates, 0);
        assert!(applied.rejected.is_empty());
        assert_eq!(values(&store, "a"), Some(json!([1, 2])));
        assert_eq!(values(&store, "b"), Some(json!([3])));
        assert_eq!(store.requests(), vec![2]);
        let before = store.all("tally_v1");

        let applied = apply(&Tally, &store, &events).await;
        assert_eq!(applied.duplicates, 3);
        assert_eq!(store.all("tally_v1"), before);
        assert_eq!(store.requests(), vec![2], "nothing written again");
    }

    #[tokio::test]
    async fn a_deleted_document_keeps_a_tombstone_and_an_older_event_does_not_recreate_it() {
        let store = MemoryStore::default();
        apply(&Tally, &store, &[added(1, "a", 1)]).await;
        apply(&Tally, &store, &[of_type(2, "Removed", "a")]).await;
        assert_eq!(values(&store, "a"), None);
        let tombstone = store.get("tally_tombstones_v1", "tally/a").unwrap();
        assert!(applied::contains(
            applied::of(&tombstone),
            &Uuid::from_u128(1).to_string()
        ));

        let applied = apply(&Tally, &store, &[added(1, "a", 1)]).await;
        assert_eq!(applied.duplicates, 1);
        assert_eq!(values(&store, "a"), None);
        // a new event does recreate it
        apply(&Tally, &store, &[added(3, "a", 3)]).await;
        assert_eq!(values(&store, "a"), Some(json!([3])));
    }

    #[tokio::test]
    async fn a_document_changed_meanwhile_is_read_again_and_both_writes_count() {
        let store = MemoryStore::default();
        apply(&Tally, &store, &[added(1, "a", 1)]).await;
        let mut other = store.get("tally_v1", "a").unwrap();
        other = applied::with_applied(other, &Uuid::from_u128(9).to_string(), DateTime::UNIX_EPOCH);
        other["values"] = json!([1, 9]);
        store.interfere("tally_v1", "a", other);

        let applied = apply(&Tally, &store, &[added(2, "a", 2)]).await;
        assert_eq!(applied.duplicates, 0);
        assert_eq!(values(&store, "a"), Some(json!([1, 2, 9])));
        let doc = store.get("tally_v1", "a").unwrap();
        for id in [1, 2, 9] {
            assert!(applied::has_applied(&doc, &Uuid::from_u128(id).to_string()));
        }
    }

    #[tokio::test]
    async fn a_refused_document_rejects_only_the_event_that_made_it_refusable() {
        let store = MemoryStore::default();
        let events = [
            added(1, "a", 1),
            of_type(2, "Refused", "a"),
            added(3, "b", 3),
        ];
        let applied = apply(&Tally, &store, &events).await;
        assert_eq!(applied.rejected.len(), 1);
        assert_eq!(applied.rejected[0].event, 1);
        assert_eq!(
            chain(&*applied.rejected[0].error),
            "elasticsearch rejected document tally/a: mapper_parsing_exception: refuse"
        );
        assert_eq!(applied.duplicates, 0);
        assert_eq!(values(&store, "a"), Some(json!([1])));
        assert_eq!(values(&store, "b"), Some(json!([3])));
    }

    #[tokio::test]
    async fn events_the_projection_rejects_are_returned_and_the_rest_applied() {
        let store = MemoryStore::default();
        let events = [
            of_type(1, "Invalid", "a"),
            added(2, "a", 2),
            of_type(3, "Bad", "a"),
        ];
        let applied = apply(&Tally, &store, &events).await;
        let rejected: Vec<(usize, String)> = applied
            .rejected
            .iter()
            .map(|r| (r.event, chain(&*r.error)))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (0, "rejected by projection: no document".to_owned()),
                (2, "rejected by projection: bad event".to_owned()),
            ]
        );
        assert_eq!(values(&store, "a"), Some(json!([2])));
    }

    /// A projection whose documents are written once: one per event (id = the event's), kept
    /// as first written.
    struct Once;

    impl SearchProjection for Once {
        basics!("once");
        fn indices(&self) -> Vec<IndexSpec> {
            one_index("once")
        }
        fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
            Ok(vec![DocRef::new(
                "once",
                event.envelope.event_id.to_string(),
            )])
        }
        fn apply(
            &self,
            _doc: &DocRef,
            current: Option<Value>,
            event: &Event,
        ) -> Result<Option<Value>, ProjectionError> {
            Ok(Some(current.unwrap_or_else(|| event.data.clone())))
        }
        fn deletes(&self) -> bool {
            false
        }
        fn written_once(&self, base: &str) -> bool {
            base == "once"
        }
    }

    #[tokio::test]
    async fn documents_written_once_are_created_unread_and_a_copy_is_read_after_its_409() {
        let store = MemoryStore::default();
        let applied = apply(&Once, &store, &[added(1, "a", 1), added(2, "a", 2)]).await;
        assert_eq!(applied.duplicates, 0);
        assert!(
            store.reads().is_empty(),
            "nothing read: {:?}",
            store.reads()
        );
        assert_eq!(store.requests(), vec![2]);
        let one = Uuid::from_u128(1).to_string();
        assert_eq!(store.get("once_v1", &one).unwrap()["value"], 1);

        // a copy of event 1 with other data, and a new event 3: the copy's create answers 409,
        // only that document is read, and it stays as first written
        let copy = event(1, "Added", "a", json!({ "value": 100 }));
        let applied = apply(&Once, &store, &[copy, added(3, "a", 3)]).await;
        assert_eq!(applied.duplicates, 1);
        assert!(applied.rejected.is_empty());
        assert_eq!(store.reads(), vec![1]);
        assert_eq!(store.get("once_v1", &one).unwrap()["value"], 1);
        let three = Uuid::from_u128(3).to_string();
        assert_eq!(store.get("once_v1", &three).unwrap()["value"], 3);
        assert_eq!(store.all("once_v1").len(), 3);
    }

    #[tokio::test]
    async fn a_request_refused_as_too_large_is_split_until_it_fits() {
        let store = MemoryStore::default();
        store.refuse_requests_over(2);
        let events: Vec<Event> = (0..5).map(|i| added(i + 1, &format!("d{i}"), 1)).collect();
        let applied = apply(&Tally, &store, &events).await;
        assert!(applied.rejected.is_empty());
        assert_eq!(store.all("tally_v1").len(), 5);
        assert!(
            store.requests().iter().all(|&n| n <= 2),
            "{:?}",
            store.requests()
        );
        assert_eq!(store.requests().iter().sum::<usize>(), 5);
    }
}
