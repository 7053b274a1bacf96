//! Step 3 of a search batch, the join (for a projection that has one): main documents
//! touched are enriched with their side documents read *after* the write; for side documents
//! touched, the main index is refreshed and every main document referencing them is enriched,
//! one page (`search_after`) and one bounded bulk at a time. Writing before reading on both
//! sides means two instances racing on a customer and an order never both miss the other's
//! write. Before the write, [`Writer::pre_enrich`] enriches new main documents with the side
//! documents as they are (or as this batch computes them), so a new document is usually
//! written once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};

use super::client::{BulkOp, ItemResult, Stored};
use super::sink::SearchSinkError;
use super::store::DocumentStore;
use super::write::{Computed, Writer, MAX_ROUNDS};
use super::{DocRef, Join, SearchProjection};

/// Page size when looking up the main documents of a side document (the join's fan-out is
/// enriched and written one page at a time, so memory and bulk size stay bounded; each page
/// is one search, whose cost on some servers grows with the index more than with the page).
const PAGE: usize = 2000;

impl<P: SearchProjection, S: DocumentStore> Writer<'_, P, S> {
    /// Enriches the main documents about to be written with their side documents as they are
    /// now (or as this round computes them, when the batch writes them too), so a new document
    /// is usually written once (the join step after the write checks again with side documents
    /// read after the write, and writes only what changed since).
    pub async fn pre_enrich(&self, computed: &mut [Computed]) -> Result<(), SearchSinkError> {
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
        // side documents this batch computes are used as they will be written (a customer
        // and their orders in one batch: the orders are written once); the rest are read
        let mut side_docs: HashMap<String, Value> = HashMap::new();
        let mut in_batch: HashSet<&str> = HashSet::new();
        for c in computed.iter().filter(|c| c.doc_ref.index == join.side) {
            in_batch.insert(&c.doc_ref.id);
            if let Some(doc) = &c.new {
                side_docs.insert(c.doc_ref.id.clone(), doc.clone());
            }
        }
        let to_read: Vec<String> = side_ids
            .into_iter()
            .filter(|id| !in_batch.contains(id.as_str()))
            .collect();
        side_docs.extend(self.side_docs(&join, &to_read).await?);
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
        let response = self.store.search(&index, &body).await?;
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
    pub async fn join(
        &self,
        join: &Join,
        finals: BTreeMap<DocRef, Option<Stored>>,
    ) -> Result<u64, SearchSinkError> {
        let main = self.indices.main_base();
        let mut written: Vec<(String, Stored)> = Vec::new();
        let mut sides: Vec<String> = Vec::new();
        for (doc_ref, stored) in finals {
            if doc_ref.index == main {
                written.extend(stored.map(|s| (doc_ref.id, s)));
            } else if doc_ref.index == join.side {
                sides.push(doc_ref.id);
            }
        }
        let mut enriched = 0;
        for chunk in written.chunks(PAGE) {
            enriched += self.enrich(join, chunk.iter().cloned().collect()).await?;
        }
        if sides.is_empty() {
            return Ok(enriched);
        }
        self.store.refresh(&self.indices.index(main)).await?;
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

#[cfg(test)]
mod tests {
    //! The join over [`MemoryStore`](super::super::memory::MemoryStore): whichever side comes
    //! first, main documents end enriched from their side document.

    use serde_json::json;

    use super::*;
    use crate::error::ProjectionError;
    use crate::projection::Event;
    use crate::search::memory::MemoryStore;
    use crate::search::write::tests::{apply, basics, event};
    use crate::search::IndexSpec;

    /// Orders (main) joined with their customer's name (side).
    struct Orders;

    impl SearchProjection for Orders {
        basics!("orders");
        fn indices(&self) -> Vec<IndexSpec> {
            ["orders", "customers"]
                .into_iter()
                .map(|base| IndexSpec {
                    base: base.into(),
                    body: json!({}),
                })
                .collect()
        }
        fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
            let key = event.key.clone().unwrap_or_default();
            Ok(match event.event_type() {
                "Customer" => vec![DocRef::new("customers", key)],
                _ => vec![DocRef::new("orders", key)],
            })
        }
        fn apply(
            &self,
            doc: &DocRef,
            current: Option<Value>,
            event: &Event,
        ) -> Result<Option<Value>, ProjectionError> {
            let mut current = current.unwrap_or_else(|| json!({}));
            match event.event_type() {
                "Customer" => current["name"] = event.data["name"].clone(),
                _ => {
                    current["order_id"] = json!(doc.id);
                    current["customer_id"] = event.data["customer_id"].clone();
                }
            }
            Ok(Some(current))
        }
        fn deletes(&self) -> bool {
            false
        }
        fn join(&self) -> Option<Join> {
            Some(Join {
                field: "customer_id".into(),
                id_field: "order_id".into(),
                side: "customers".into(),
                side_topics: vec!["customers".into()],
            })
        }
        fn enrich(&self, mut doc: Value, side: Option<&Value>) -> Value {
            if let Some(name) = side.and_then(|s| s.get("name")) {
                doc["customer_name"] = name.clone();
            }
            doc
        }
    }

    fn order(id: u128, order: &str, customer: &str) -> Event {
        event(id, "Order", order, json!({ "customer_id": customer }))
    }

    fn customer(id: u128, customer: &str, name: &str) -> Event {
        event(id, "Customer", customer, json!({ "name": name }))
    }

    fn names(store: &MemoryStore) -> Vec<(String, Value)> {
        store
            .all("orders_v1")
            .into_iter()
            .map(|(id, doc)| (id, doc["customer_name"].clone()))
            .collect()
    }

    #[tokio::test]
    async fn orders_written_before_their_customer_are_enriched_when_it_arrives() {
        let store = MemoryStore::default();
        let orders: Vec<Event> = (0..3)
            .map(|i| order(i + 1, &format!("o{i}"), "c"))
            .chain([order(4, "other", "d")])
            .collect();
        apply(&Orders, &store, &orders).await;
        assert!(names(&store).iter().all(|(_, name)| name.is_null()));

        apply(&Orders, &store, &[customer(5, "c", "Ada")]).await;
        assert_eq!(
            names(&store),
            vec![
                ("o0".to_owned(), json!("Ada")),
                ("o1".to_owned(), json!("Ada")),
                ("o2".to_owned(), json!("Ada")),
                ("other".to_owned(), Value::Null),
            ]
        );
    }

    #[tokio::test]
    async fn an_order_and_its_customer_in_one_batch_end_enriched_either_way() {
        for events in [
            vec![order(1, "o", "c"), customer(2, "c", "Ada")],
            vec![customer(2, "c", "Ada"), order(1, "o", "c")],
        ] {
            let store = MemoryStore::default();
            apply(&Orders, &store, &events).await;
            assert_eq!(names(&store), vec![("o".to_owned(), json!("Ada"))]);
        }
    }

    #[tokio::test]
    async fn orders_and_their_new_customer_in_one_batch_are_written_enriched_at_once() {
        let store = MemoryStore::default();
        let events = [
            customer(1, "c", "Ada"),
            order(2, "o1", "c"),
            order(3, "o2", "c"),
        ];
        apply(&Orders, &store, &events).await;
        assert_eq!(
            names(&store),
            vec![
                ("o1".to_owned(), json!("Ada")),
                ("o2".to_owned(), json!("Ada"))
            ]
        );
        assert_eq!(
            store.requests(),
            vec![3],
            "the customer and both orders in one write, no enrichment pass"
        );
    }

    #[tokio::test]
    async fn a_new_order_of_a_known_customer_is_written_enriched_at_once() {
        let store = MemoryStore::default();
        apply(&Orders, &store, &[customer(1, "c", "Ada")]).await;
        let before = store.requests().len();
        apply(&Orders, &store, &[order(2, "o", "c")]).await;
        assert_eq!(names(&store), vec![("o".to_owned(), json!("Ada"))]);
        assert_eq!(
            store.requests().len(),
            before + 1,
            "one write, no enrichment pass"
        );
    }
}
