//! [`SearchSink`]: commits batches of a [`SearchProjection`] to Elasticsearch, positions to
//! PostgreSQL.
//!
//! One batch:
//! 1. records below the stored position are skipped; poison records and events the projection
//!    rejects are set aside for the dead-letter topic;
//! 2. **write**: the target documents are read in realtime (`_mget`), each one's events are
//!    applied in memory (events whose id is in the document's `factline.applied` are skipped;
//!    a missing document starts from its tombstone's ids), and changed documents are written
//!    in bounded `_bulk` requests with `if_seq_no`/`if_primary_term` (`create` for new ones).
//!    A document the projection deletes first gets a **tombstone** (its applied ids, in the
//!    version's tombstone index, which no alias points at), then is deleted: a re-delivered
//!    older event finds its id in the tombstone and does not recreate the document. A 409
//!    re-reads that document and applies again; 429/5xx fail the batch (the runner retries it
//!    with backoff); a document Elasticsearch rejects (400…) is retried one event at a time
//!    and the event it fails on is dead-lettered. A whole request refused for its contents
//!    (413 too large, 400) is split in halves down to single documents, and a document
//!    refused alone is dead-lettered the same way: never retried forever, never skipped;
//! 3. **join** (if the projection has one): main documents touched are enriched with their
//!    side documents read *after* the write; for side documents touched, the main index is
//!    refreshed and every main document referencing them is enriched, one page (`search_after`)
//!    and one bounded bulk at a time. Writing before reading on both sides means two instances
//!    racing on a customer and an order never both miss the other's write;
//! 4. the main index is refreshed (a stored position promises readers that the documents are
//!    searchable: read-your-writes), dead letters go to `<topic>.dlq`, then ONE PostgreSQL
//!    transaction records the dead-letter rows and moves the positions.
//!
//! A crash anywhere re-applies the batch: harmless, since writes are idempotent (applied ids)
//! and order-safe (the projection's merge is commutative). Ordering never relies on Kafka
//! offsets, so it holds when a document is fed from several partitions or topics and when the
//! index is rebuilt.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use serde_json::{json, Value};
use tokio_postgres::Transaction;

use super::applied;
use super::client::{splittable_status, BulkOp, EsClient, EsError, ItemResult, Stored};
use super::index::{tombstone_id, Indices};
use super::{DocRef, Join, SearchProjection};
use crate::bookkeeping::{self, BootstrapError, Liveness, Registration};
use crate::config::{Config, ConfigError};
use crate::error::{Cause, ProjectionError};
use crate::projection::Event;
use crate::runtime::sink::{Applied, Batch, Rejected, Sink, SinkSpec};

/// Rounds of re-reading after conflicts before the batch is failed (and retried later).
const MAX_ROUNDS: usize = 50;
/// Page size when looking up the main documents of a side document (the join's fan-out is
/// enriched and written one page at a time, so memory and bulk size stay bounded).
const PAGE: usize = 500;
/// Most operations in one `_bulk` request (a request refused as too large is split further).
const BULK_MAX_OPS: usize = 500;

/// One document of a write round: as read, as computed, and the events newly applied.
struct Computed {
    doc_ref: DocRef,
    stored: Option<Stored>,
    new: Option<Value>,
    applied: Vec<usize>,
    /// The bookkeeping a deleted (or never created) document keeps in its tombstone.
    gone: Option<Value>,
}

/// What a write round sends for one document.
struct Planned {
    doc_ref: DocRef,
    stored: Option<Stored>,
    new: Option<Value>,
    applied: Vec<usize>,
    tombstone: Option<BulkOp>,
    main: Option<BulkOp>,
}

/// A [`SearchProjection`] writing to Elasticsearch.
#[derive(Debug, Clone)]
pub struct SearchSink<P> {
    projection: P,
    spec: SinkSpec,
    client: EsClient,
    indices: Indices,
}

/// A batch of the search sink failed for a reason worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum SearchSinkError {
    /// Elasticsearch is unavailable or refused a request as a whole.
    #[error(transparent)]
    Elasticsearch(#[from] EsError),
    /// PostgreSQL failed (the swap).
    #[error("postgresql failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The projection failed transiently.
    #[error(transparent)]
    Projection(ProjectionError),
    /// Conflicting writers kept changing documents for [`MAX_ROUNDS`] rounds.
    #[error("{documents} documents kept changing under concurrent writers")]
    KeptChanging {
        /// How many were still pending.
        documents: usize,
    },
    /// One write of a `_bulk` request failed transiently (429, 5xx).
    #[error("{action} {index}/{id} failed: {message}")]
    Item {
        /// What was written: `writing`, `writing the tombstone of`, `enriching`.
        action: &'static str,
        /// The index's base name.
        index: String,
        /// The document id.
        id: String,
        /// What Elasticsearch said.
        message: String,
    },
    /// Elasticsearch answered fewer `_bulk` items than operations sent.
    #[error("_bulk answered too few items")]
    ShortBulk,
}

/// A document Elasticsearch refused for good: its event is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("elasticsearch rejected document {index}/{id}: {message}")]
pub struct DocumentRejected {
    /// The index's base name.
    pub index: String,
    /// The document id.
    pub id: String,
    /// What Elasticsearch said.
    pub message: String,
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

impl<P: SearchProjection> SearchSink<P> {
    /// A sink for `projection` on the cluster at `ELASTICSEARCH_URL`, index names prefixed with
    /// `PROJECTOR_INDEX_PREFIX` (default: the topic prefix).
    pub fn new(projection: P, config: &Config) -> Result<SearchSink<P>, ConfigError> {
        let url = config
            .elasticsearch_url
            .as_deref()
            .ok_or(ConfigError::Missing("ELASTICSEARCH_URL"))?;
        let client = EsClient::new(url).map_err(|e| ConfigError::Invalid {
            name: "ELASTICSEARCH_URL",
            reason: e.to_string(),
        })?;
        let indices = Indices::new(
            config.index_prefix(),
            projection.version(),
            projection.indices(),
        );
        if indices.main_base().is_empty() {
            return Err(ConfigError::Invalid {
                name: "indices",
                reason: format!("search projection {} declares no index", projection.name()),
            });
        }
        let spec = SinkSpec {
            kind: "elasticsearch",
            name: projection.name().to_owned(),
            version: projection.version(),
            topics: projection.topics(),
            event_types: projection.event_types(),
            read_models: vec![indices.alias()],
            // longer: every batch ends in an index refresh, which is costly when frequent
            default_batch_wait: Duration::from_millis(100),
        };
        Ok(SearchSink {
            projection,
            spec,
            client,
            indices,
        })
    }

    /// The versioned indices.
    pub fn indices(&self) -> &Indices {
        &self.indices
    }

    /// The Elasticsearch client.
    pub fn client(&self) -> &EsClient {
        &self.client
    }

    async fn mget(&self, refs: &[DocRef]) -> Result<Vec<Option<Stored>>, SearchSinkError> {
        let docs: Vec<(String, String)> = refs
            .iter()
            .map(|r| (self.indices.index(&r.index), r.id.clone()))
            .collect();
        Ok(self.client.mget(&docs).await?)
    }

    /// The tombstones of these documents, where there are some.
    async fn tombstones(
        &self,
        refs: &[DocRef],
    ) -> Result<HashMap<DocRef, Stored>, SearchSinkError> {
        let index = self.indices.tombstones();
        let docs: Vec<(String, String)> = refs
            .iter()
            .map(|r| (index.clone(), tombstone_id(&r.index, &r.id)))
            .collect();
        let found = self.client.mget(&docs).await?;
        Ok(refs
            .iter()
            .cloned()
            .zip(found)
            .filter_map(|(r, s)| s.map(|s| (r, s)))
            .collect())
    }

    /// Sends operations in bounded `_bulk` requests; one result per operation, in order.
    async fn bulk(&self, ops: &[BulkOp]) -> Result<Vec<ItemResult>, SearchSinkError> {
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(BULK_MAX_OPS) {
            results.extend(self.bulk_split(chunk).await?);
        }
        Ok(results)
    }

    /// One `_bulk` request; if Elasticsearch refuses the whole request for its contents (413
    /// too large, 400), the halves are sent separately, down to single operations, and an
    /// operation refused alone is a refused document (its event is dead-lettered), so such a
    /// request is never retried forever. Other refusals (401, 403, 404: credentials or cluster)
    /// are transient: retried with backoff, visible in health and metrics, nothing skipped.
    fn bulk_split<'a>(
        &'a self,
        ops: &'a [BulkOp],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<ItemResult>, SearchSinkError>> + Send + 'a>> {
        Box::pin(async move {
            match self.client.bulk(ops).await {
                Ok(results) => Ok(results),
                Err(EsError::BulkRejected { status, message })
                    if splittable_status(status) && ops.len() > 1 =>
                {
                    tracing::warn!(status, operations = ops.len(), error = %message,
                        "bulk request refused, splitting it");
                    let (left, right) = ops.split_at(ops.len() / 2);
                    let mut results = self.bulk_split(left).await?;
                    results.extend(self.bulk_split(right).await?);
                    Ok(results)
                }
                Err(EsError::BulkRejected { status, message }) if splittable_status(status) => {
                    Ok(vec![ItemResult::Permanent(message)])
                }
                Err(e) => Err(e.into()),
            }
        })
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
        let main = match (&stored, &new) {
            _ if applied.is_empty() => None,
            (None, Some(doc)) => Some(BulkOp::Create {
                index,
                id,
                doc: doc.clone(),
            }),
            (Some(s), Some(doc)) if *doc != s.source => Some(BulkOp::Replace {
                index,
                id,
                doc: doc.clone(),
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
            new,
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
            let current = self.mget(&refs).await?;
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
            let plans: Vec<Planned> = computed
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

            let main_ops: Vec<BulkOp> = plans
                .iter()
                .filter(|p| !blocked.contains(&p.doc_ref))
                .filter_map(|p| p.main.clone())
                .collect();
            let mut results = self.bulk(&main_ops).await?.into_iter();
            for plan in plans {
                if blocked.contains(&plan.doc_ref) {
                    continue;
                }
                let Planned {
                    doc_ref,
                    stored,
                    new,
                    applied,
                    tombstone,
                    main,
                } = plan;
                let result = match main {
                    Some(_) => results.next().ok_or(SearchSinkError::ShortBulk)?,
                    None if tombstone.is_some() => ItemResult::Done {
                        seq_no: 0,
                        primary_term: 0,
                    },
                    None => {
                        // nothing to write: unchanged, or only duplicates
                        newly.extend(applied);
                        pending.remove(&doc_ref);
                        finals.insert(doc_ref, stored.filter(|_| new.is_some()));
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
                        let stored = new.map(|source| Stored {
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

    /// Enriches the main documents about to be written with their side documents as they are
    /// now, so a new document is usually written once (the join step after the write checks
    /// again with side documents read after the write, and writes only what changed since).
    async fn pre_enrich(&self, computed: &mut [Computed]) -> Result<(), SearchSinkError> {
        let Some(join) = self.projection.join() else {
            return Ok(());
        };
        let main = self.indices.main_base();
        let wanted = |c: &Computed| {
            (c.doc_ref.index == main && !c.applied.is_empty())
                .then(|| {
                    c.new
                        .as_ref()?
                        .get(&join.field)?
                        .as_str()
                        .map(str::to_owned)
                })
                .flatten()
        };
        let side_ids: Vec<String> = computed
            .iter()
            .filter_map(wanted)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let side_docs = self.side_docs(&join, &side_ids).await?;
        for entry in computed.iter_mut() {
            if let Some(side_id) = wanted(entry) {
                if let Some(doc) = entry.new.take() {
                    entry.new = Some(self.projection.enrich(doc, side_docs.get(&side_id)));
                }
            }
        }
        Ok(())
    }

    /// The current side documents of these ids (missing ones absent).
    async fn side_docs(
        &self,
        join: &Join,
        ids: &[String],
    ) -> Result<HashMap<String, Value>, SearchSinkError> {
        let refs: Vec<DocRef> = ids
            .iter()
            .map(|id| DocRef::new(&join.side, id.clone()))
            .collect();
        Ok(ids
            .iter()
            .cloned()
            .zip(self.mget(&refs).await?)
            .filter_map(|(id, s)| s.map(|s| (id, s.source)))
            .collect())
    }

    /// One page (at most [`PAGE`]) of the main documents whose `join.field` is one of
    /// `side_ids`, after `after` (the main index must be refreshed); returns the page and
    /// where the next one starts (`None`: this was the last).
    async fn referencing_page(
        &self,
        join: &Join,
        side_ids: &[String],
        after: Option<Value>,
    ) -> Result<(Vec<(String, Stored)>, Option<Value>), SearchSinkError> {
        let index = self.indices.index(self.indices.main_base());
        let mut body = json!({
            "query": {"terms": {join.field.as_str(): side_ids}},
            "size": PAGE,
            "sort": [{join.id_field.as_str(): "asc"}],
            "seq_no_primary_term": true,
        });
        if let Some(after) = after {
            body["search_after"] = after;
        }
        let response = self.client.search(&index, &body).await?;
        let hits = response["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut found = Vec::with_capacity(hits.len());
        for hit in &hits {
            if let Some(id) = hit["_id"].as_str() {
                found.push((
                    id.to_owned(),
                    Stored {
                        source: hit["_source"].clone(),
                        seq_no: hit["_seq_no"].as_i64().unwrap_or_default(),
                        primary_term: hit["_primary_term"].as_i64().unwrap_or(1),
                    },
                ));
            }
        }
        let next = if hits.len() < PAGE {
            None
        } else {
            hits.last().map(|h| h["sort"].clone())
        };
        Ok((found, next))
    }

    /// Step 3 of the module docs: first the main documents the batch wrote, then, one page
    /// at a time, every main document referencing a side document the batch wrote (so a
    /// customer with many orders never loads them all, nor writes them in one request).
    async fn join(
        &self,
        join: &Join,
        finals: &BTreeMap<DocRef, Option<Stored>>,
    ) -> Result<u64, SearchSinkError> {
        let main = self.indices.main_base();
        let written: BTreeMap<String, Stored> = finals
            .iter()
            .filter(|(r, _)| r.index == main)
            .filter_map(|(r, s)| s.clone().map(|s| (r.id.clone(), s)))
            .collect();
        let sides: Vec<String> = finals
            .keys()
            .filter(|r| r.index == join.side)
            .map(|r| r.id.clone())
            .collect();
        let mut enriched = 0;
        for chunk in written.into_iter().collect::<Vec<_>>().chunks(PAGE) {
            enriched += self.enrich(join, chunk.iter().cloned().collect()).await?;
        }
        if sides.is_empty() {
            return Ok(enriched);
        }
        self.client.refresh(&self.indices.index(main)).await?;
        for chunk in sides.chunks(PAGE) {
            let mut after = None;
            loop {
                let (page, next) = self.referencing_page(join, chunk, after).await?;
                enriched += self.enrich(join, page.into_iter().collect()).await?;
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        Ok(enriched)
    }

    /// Brings these main documents in line with their side documents (conditional writes,
    /// re-read and retried on conflict); returns how many were written.
    async fn enrich(
        &self,
        join: &Join,
        mut pending: BTreeMap<String, Stored>,
    ) -> Result<u64, SearchSinkError> {
        let main = self.indices.main_base();
        let mut enriched = 0;
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            if round > MAX_ROUNDS {
                return Err(SearchSinkError::KeptChanging {
                    documents: pending.len(),
                });
            }
            let side_ids: Vec<String> = pending
                .values()
                .filter_map(|s| s.source.get(&join.field).and_then(Value::as_str))
                .map(str::to_owned)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let side_docs = self.side_docs(join, &side_ids).await?;
            let mut ops = Vec::new();
            let mut ids = Vec::new();
            for (id, stored) in &pending {
                let side = stored
                    .source
                    .get(&join.field)
                    .and_then(Value::as_str)
                    .and_then(|s| side_docs.get(s));
                let new = self.projection.enrich(stored.source.clone(), side);
                if new != stored.source {
                    ops.push(BulkOp::Replace {
                        index: self.indices.index(main),
                        id: id.clone(),
                        doc: new,
                        seq_no: stored.seq_no,
                        primary_term: stored.primary_term,
                    });
                    ids.push(id.clone());
                }
            }
            let results = self.bulk(&ops).await?;
            let mut conflicted = Vec::new();
            for (id, result) in ids.into_iter().zip(results) {
                match result {
                    ItemResult::Done { .. } => enriched += 1,
                    ItemResult::Conflict => {
                        tracing::debug!(%id, "joined document changed meanwhile, re-reading");
                        conflicted.push(DocRef::new(main, id));
                    }
                    ItemResult::Transient(message) => {
                        return Err(SearchSinkError::Item {
                            action: "enriching",
                            index: main.to_owned(),
                            id,
                            message,
                        })
                    }
                    ItemResult::Permanent(message) => {
                        // Retrying cannot help and no event of the batch is to blame (the
                        // document itself was accepted): the document keeps its previous
                        // side fields, loudly (error log and a counter), and the batch goes on.
                        tracing::error!(projector = %self.projection.name(), %id, error = %message,
                            "enriched document rejected by elasticsearch");
                        metrics::counter!(
                            "factline_projector_enrich_rejected_total",
                            "projector" => self.projection.name().to_owned()
                        )
                        .increment(1);
                    }
                }
            }
            pending = conflicted
                .iter()
                .map(|r| r.id.clone())
                .zip(self.mget(&conflicted).await?)
                .filter_map(|(id, s)| s.map(|s| (id, s)))
                .collect();
        }
        Ok(enriched)
    }
}

/// Whether the document's `factline.applied` holds the event id.
pub fn has_applied(doc: &Value, event_id: &str) -> bool {
    applied::contains(applied::of(doc), event_id)
}

/// The document with the event added to `factline.applied` (the newest
/// [`APPLIED_MAX`](super::applied::APPLIED_MAX) kept, sorted by time, so the document does not
/// depend on the order events arrived in).
pub fn with_applied(doc: Value, event_id: &str, occurred_at: DateTime<Utc>) -> Value {
    let mut ids = applied::entries(applied::of(&doc));
    ids.insert(applied::entry(event_id, occurred_at));
    applied::with(doc, applied::bookkeeping(ids))
}

impl<P: SearchProjection> Sink for SearchSink<P> {
    type Error = SearchSinkError;

    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    async fn bootstrap(
        &self,
        client: &mut Object,
        registration: &Registration,
    ) -> Result<Liveness, BootstrapError> {
        let liveness = bookkeeping::bootstrap(
            client,
            registration,
            &[],
            &[],
            self.projection.declarative_config(),
        )
        .await?;
        if matches!(liveness, Liveness::Superseded { .. }) {
            return Ok(liveness);
        }
        self.indices
            .create(&self.client)
            .await
            .map_err(|e| match e {
                EsError::Transient(m) => BootstrapError::Transient(m),
                EsError::Permanent(message) | EsError::BulkRejected { message, .. } => {
                    BootstrapError::Migration {
                        migration: "create indices".into(),
                        message,
                    }
                }
            })?;
        if liveness == Liveness::Live {
            self.indices
                .point_alias(&self.client)
                .await
                .map_err(|e| BootstrapError::Transient(e.to_string()))?;
        }
        Ok(liveness)
    }

    /// Steps 1 to 4 of the module docs; the runtime's transaction is not used (documents are
    /// written idempotently, then the runtime stores the positions).
    async fn apply(
        &self,
        _tx: &mut Transaction<'_>,
        batch: &Batch<'_>,
    ) -> Result<Applied, SearchSinkError> {
        let events = batch.events();
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
        if let Some(join) = self.projection.join() {
            let enriched = self.join(&join, &finals).await?;
            main_written |= enriched > 0;
            tracing::debug!(enriched, "documents enriched");
        }
        let join_ms = started.elapsed().as_millis() as u64 - write_ms;
        if main_written {
            // a stored position promises readers that the documents are searchable
            self.client
                .refresh(&self.indices.index(self.indices.main_base()))
                .await?;
        }
        tracing::debug!(
            documents = finals.len(),
            write_ms,
            join_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "search batch written"
        );
        Ok(Applied {
            duplicates: (0..events.len())
                .filter(|i| !newly.contains(i) && !rejected.contains_key(i))
                .count() as u64,
            rejected: rejected
                .into_iter()
                .map(|(event, error)| Rejected { event, error })
                .collect(),
        })
    }

    async fn swap(&self, client: &mut Object, previous: u32) -> Result<bool, SearchSinkError> {
        let swapped = bookkeeping::swap_live_with(
            client,
            self.projection.name(),
            self.projection.version(),
            &[],
            || async {
                self.client
                    .refresh(&self.indices.index(self.indices.main_base()))
                    .await?;
                self.indices.point_alias(&self.client).await?;
                Ok::<(), SearchSinkError>(())
            },
        )
        .await?;
        if swapped && previous != self.projection.version() {
            if let Err(error) = self.indices.delete_version(&self.client, previous).await {
                tracing::warn!(%error, previous, "cannot delete the retired indices");
            }
        }
        Ok(swapped)
    }

    fn stops_when_retired(&self) -> bool {
        true
    }

    async fn retired(&self) {
        if let Err(error) = self
            .indices
            .delete_version(&self.client, self.projection.version())
            .await
        {
            tracing::warn!(%error, "cannot delete this retired version's indices");
        }
    }
}

/// Runs a search projection until `shutdown` resolves (see [`crate::run`]).
pub async fn run_search<P, S>(
    config: Config,
    projection: P,
    shutdown: S,
) -> Result<(), crate::RunError>
where
    P: SearchProjection,
    S: std::future::Future<Output = ()> + Send + 'static,
{
    let sink = SearchSink::new(projection, &config)?;
    crate::runner::run_sink(config, sink, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
