//! The document store the search sink reads and writes through: [`DocumentStore`] (the four
//! calls it needs), implemented by [`EsClient`] and, in unit tests, by an in-memory store; and
//! [`bulk`], which sends operations in bounded `_bulk` requests and splits a request refused
//! for its contents; [`mget`], which reads in bounded `_mget` requests.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::client::{splittable_status, BulkOp, EsClient, EsError, ItemResult, Stored};

/// Most operations in one `_bulk` request (a request refused as too large is split further).
pub const BULK_MAX_OPS: usize = 500;

/// Most documents in one `_mget` request.
pub const MGET_MAX_DOCS: usize = 2000;

/// What the search sink needs from Elasticsearch.
pub trait DocumentStore: Send + Sync {
    /// Reads documents by (index, id) in realtime; `None` for a missing one.
    fn mget(
        &self,
        docs: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<Option<Stored>>, EsError>> + Send;

    /// One `_bulk` request; one result per operation, in order.
    fn bulk(&self, ops: &[BulkOp])
        -> impl Future<Output = Result<Vec<ItemResult>, EsError>> + Send;

    /// Makes what was written searchable.
    fn refresh(&self, index: &str) -> impl Future<Output = Result<(), EsError>> + Send;

    /// A `_search` request; the response body.
    fn search(
        &self,
        index: &str,
        body: &Value,
    ) -> impl Future<Output = Result<Value, EsError>> + Send;
}

impl DocumentStore for EsClient {
    async fn mget(&self, docs: &[(String, String)]) -> Result<Vec<Option<Stored>>, EsError> {
        EsClient::mget(self, docs).await
    }

    async fn bulk(&self, ops: &[BulkOp]) -> Result<Vec<ItemResult>, EsError> {
        EsClient::bulk(self, ops).await
    }

    async fn refresh(&self, index: &str) -> Result<(), EsError> {
        EsClient::refresh(self, index).await
    }

    async fn search(&self, index: &str, body: &Value) -> Result<Value, EsError> {
        EsClient::search(self, index, body).await
    }
}

/// Reads documents in bounded `_mget` requests (realtime); one answer per document, in order.
pub async fn mget<S: DocumentStore>(
    store: &S,
    docs: &[(String, String)],
) -> Result<Vec<Option<Stored>>, EsError> {
    let mut found = Vec::with_capacity(docs.len());
    for chunk in docs.chunks(MGET_MAX_DOCS) {
        found.extend(store.mget(chunk).await?);
    }
    Ok(found)
}

/// Sends operations in bounded `_bulk` requests; one result per operation, in order.
pub async fn bulk<S: DocumentStore>(store: &S, ops: &[BulkOp]) -> Result<Vec<ItemResult>, EsError> {
    let mut results = Vec::with_capacity(ops.len());
    for chunk in ops.chunks(BULK_MAX_OPS) {
        results.extend(bulk_split(store, chunk).await?);
    }
    Ok(results)
}

/// One `_bulk` request; if Elasticsearch refuses the whole request for its contents (413 too
/// large, 400), the halves are sent separately, down to single operations, and an operation
/// refused alone is a refused document (its event is dead-lettered), so such a request is never
/// retried forever. Other refusals (401, 403, 404: credentials or cluster) are transient:
/// retried with backoff, visible in health and metrics, nothing skipped.
fn bulk_split<'a, S: DocumentStore>(
    store: &'a S,
    ops: &'a [BulkOp],
) -> Pin<Box<dyn Future<Output = Result<Vec<ItemResult>, EsError>> + Send + 'a>> {
    Box::pin(async move {
        match store.bulk(ops).await {
            Ok(results) => Ok(results),
            Err(EsError::BulkRejected { status, message })
                if splittable_status(status) && ops.len() > 1 =>
            {
                tracing::warn!(status, operations = ops.len(), error = %message,
                    "bulk request refused, splitting it");
                let (left, right) = ops.split_at(ops.len() / 2);
                let mut results = bulk_split(store, left).await?;
                results.extend(bulk_split(store, right).await?);
                Ok(results)
            }
            Err(EsError::BulkRejected { status, message }) if splittable_status(status) => {
                Ok(vec![ItemResult::Permanent(message)])
            }
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::search::memory::MemoryStore;

    #[tokio::test]
    async fn many_documents_are_read_in_bounded_requests_and_answered_in_order() {
        let store = MemoryStore::default();
        let wanted = MGET_MAX_DOCS * 2 + 3;
        for n in (0..wanted).step_by(7) {
            store.put("orders", &n.to_string(), json!({ "n": n }));
        }
        let docs: Vec<(String, String)> = (0..wanted)
            .map(|n| ("orders".to_owned(), n.to_string()))
            .collect();
        let found = mget(&store, &docs).await.unwrap();
        assert_eq!(store.reads(), vec![MGET_MAX_DOCS, MGET_MAX_DOCS, 3]);
        assert_eq!(found.len(), wanted);
        for (n, doc) in found.iter().enumerate() {
            let expected = (n % 7 == 0).then(|| json!({ "n": n }));
            assert_eq!(
                doc.as_ref().map(|d| d.source.clone()),
                expected,
                "document {n}"
            );
        }
    }
}
