//! The document store the search sink reads and writes through: [`DocumentStore`] (the four
//! calls it needs), implemented by [`EsClient`] and, in unit tests, by an in-memory store; and
//! [`bulk`], which sends operations in bounded `_bulk` requests and splits a request refused
//! for its contents.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

use super::client::{splittable_status, BulkOp, EsClient, EsError, ItemResult, Stored};

/// Most operations in one `_bulk` request (a request refused as too large is split further).
pub const BULK_MAX_OPS: usize = 500;

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
