//! An in-memory [`DocumentStore`] for unit tests of the write and join steps: conditional
//! writes with sequence numbers like Elasticsearch's, documents it refuses, a request size it
//! refuses as too large, a writer that changes a document behind the sink's back, and the one
//! `terms` search the join pages with.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::client::{BulkOp, EsError, ItemResult, Stored};
use super::store::DocumentStore;

/// Documents by (index, id).
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    docs: BTreeMap<(String, String), Stored>,
    seq_no: i64,
    /// Operations sent, counted per request.
    requests: Vec<usize>,
    /// Documents read, counted per `_mget` request.
    reads: Vec<usize>,
    /// A request with more operations is refused as too large (413).
    max_ops: Option<usize>,
    /// Writes to apply just before the next `_bulk` request, as if another instance wrote.
    interference: Vec<(String, String, Value)>,
}

impl MemoryStore {
    /// The stored document, if any.
    pub fn get(&self, index: &str, id: &str) -> Option<Value> {
        self.lock()
            .docs
            .get(&(index.to_owned(), id.to_owned()))
            .map(|s| s.source.clone())
    }

    /// Every document of an index, by id.
    pub fn all(&self, index: &str) -> BTreeMap<String, Value> {
        self.lock()
            .docs
            .iter()
            .filter(|((i, _), _)| i == index)
            .map(|((_, id), s)| (id.clone(), s.source.clone()))
            .collect()
    }

    /// Writes a document directly (a new sequence number).
    pub fn put(&self, index: &str, id: &str, source: Value) {
        let mut state = self.lock();
        state.seq_no += 1;
        let seq_no = state.seq_no;
        state.docs.insert(
            (index.to_owned(), id.to_owned()),
            Stored {
                source,
                seq_no,
                primary_term: 1,
            },
        );
    }

    /// Refuses `_bulk` requests of more than `max` operations as too large.
    pub fn refuse_requests_over(&self, max: usize) {
        self.lock().max_ops = Some(max);
    }

    /// Just before the next `_bulk` request, `source` is written to `index/id` as if by
    /// another instance.
    pub fn interfere(&self, index: &str, id: &str, source: Value) {
        self.lock()
            .interference
            .push((index.to_owned(), id.to_owned(), source));
    }

    /// How many operations each `_bulk` request carried.
    pub fn requests(&self) -> Vec<usize> {
        self.lock().requests.clone()
    }

    /// How many documents each `_mget` request read.
    pub fn reads(&self) -> Vec<usize> {
        self.lock().reads.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// A document the store refuses (as Elasticsearch refuses one its mapping does not allow).
fn refused(doc: &Value) -> bool {
    doc.get("refuse") == Some(&Value::Bool(true))
}

impl State {
    fn write(&mut self, op: &BulkOp) -> ItemResult {
        let (index, id) = match op {
            BulkOp::Create { index, id, .. }
            | BulkOp::Replace { index, id, .. }
            | BulkOp::Delete { index, id, .. } => (index.clone(), id.clone()),
        };
        let key = (index, id);
        let current = self.docs.get(&key).map(|s| (s.seq_no, s.primary_term));
        let doc = match op {
            BulkOp::Create { doc, .. } if current.is_none() => Some(doc),
            BulkOp::Replace {
                doc,
                seq_no,
                primary_term,
                ..
            } if current == Some((*seq_no, *primary_term)) => Some(doc),
            BulkOp::Delete {
                seq_no,
                primary_term,
                ..
            } if current == Some((*seq_no, *primary_term)) => None,
            _ => return ItemResult::Conflict,
        };
        match doc {
            Some(doc) if refused(doc) => {
                ItemResult::Permanent("mapper_parsing_exception: refuse".into())
            }
            Some(doc) => {
                self.seq_no += 1;
                let stored = Stored {
                    source: doc.clone(),
                    seq_no: self.seq_no,
                    primary_term: 1,
                };
                self.docs.insert(key, stored);
                ItemResult::Done {
                    seq_no: self.seq_no,
                    primary_term: 1,
                }
            }
            None => {
                self.docs.remove(&key);
                ItemResult::Done {
                    seq_no: 0,
                    primary_term: 0,
                }
            }
        }
    }
}

impl DocumentStore for MemoryStore {
    async fn mget(&self, docs: &[(String, String)]) -> Result<Vec<Option<Stored>>, EsError> {
        let mut state = self.lock();
        state.reads.push(docs.len());
        Ok(docs
            .iter()
            .map(|key| state.docs.get(key).cloned())
            .collect())
    }

    async fn bulk(&self, ops: &[BulkOp]) -> Result<Vec<ItemResult>, EsError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let interference = std::mem::take(&mut self.lock().interference);
        for (index, id, source) in interference {
            self.put(&index, &id, source);
        }
        let mut state = self.lock();
        if state.max_ops.is_some_and(|max| ops.len() > max) {
            return Err(EsError::BulkRejected {
                status: 413,
                message: "request too large".into(),
            });
        }
        state.requests.push(ops.len());
        Ok(ops.iter().map(|op| state.write(op)).collect())
    }

    async fn refresh(&self, _index: &str) -> Result<(), EsError> {
        Ok(())
    }

    /// Only `{"query": {"terms": {field: [..]}}, "size", "sort": [{id_field: "asc"}],
    /// "search_after"}`, the join's page query.
    async fn search(&self, index: &str, body: &Value) -> Result<Value, EsError> {
        let terms = body["query"]["terms"]
            .as_object()
            .and_then(|t| t.iter().next())
            .ok_or_else(|| EsError::Permanent(format!("unsupported query {body}")))?;
        let (field, wanted) = (terms.0.clone(), terms.1.clone());
        let sort_field = body["sort"][0]
            .as_object()
            .and_then(|s| s.keys().next().cloned())
            .ok_or_else(|| EsError::Permanent(format!("unsupported sort {body}")))?;
        let size = body["size"].as_u64().unwrap_or(10) as usize;
        let after = body["search_after"][0].as_str().map(str::to_owned);
        let wanted: Vec<Value> = wanted.as_array().cloned().unwrap_or_default();
        let state = self.lock();
        let mut hits: Vec<(String, String, &Stored)> = state
            .docs
            .iter()
            .filter(|((i, _), s)| i == index && wanted.contains(&s.source[&field]))
            .map(|((_, id), s)| {
                let key = s.source[&sort_field]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (key, id.clone(), s)
            })
            .filter(|(key, _, _)| after.as_ref().is_none_or(|a| key > a))
            .collect();
        hits.sort_by(|a, b| a.0.cmp(&b.0));
        hits.truncate(size);
        let hits: Vec<Value> = hits
            .into_iter()
            .map(|(key, id, s)| {
                json!({"_id": id, "_source": s.source, "_seq_no": s.seq_no,
                    "_primary_term": s.primary_term, "sort": [key]})
            })
            .collect();
        Ok(json!({"hits": {"hits": hits}}))
    }
}
