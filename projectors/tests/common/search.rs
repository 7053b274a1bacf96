//! Elasticsearch helpers of the search compliance suite: configuration, index dumps, searches,
//! and a proxy refusing oversized `_bulk` requests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use factline_projectors::Config;
use serde_json::{json, Value};

use super::{env, Fixture};

pub fn es_url() -> String {
    env("ELASTICSEARCH_URL")
}

impl Fixture {
    /// A search projector configuration: indices under `{prefix}{extra}`.
    pub fn search_config(&self, database_url: &str, extra: &str) -> Config {
        let mut config = self.config(database_url);
        config.elasticsearch_url = Some(es_url());
        config.index_prefix = Some(format!("{}{extra}", self.prefix));
        config
    }
}

pub async fn es(method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}/{path}", es_url().trim_end_matches('/')));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn refresh(index: &str) {
    let (status, body) = es(reqwest::Method::POST, &format!("{index}/_refresh"), None).await;
    assert!(status < 300, "refresh {index}: {body}");
}

/// Every document of an index or alias as (id, source), sorted by `sort_field`.
pub async fn dump(index: &str, sort_field: &str) -> Vec<(String, Value)> {
    refresh(index).await;
    let (status, body) = es(
        reqwest::Method::POST,
        &format!("{index}/_search"),
        Some(json!({"query": {"match_all": {}}, "size": 10000, "sort": [{sort_field: "asc"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone()))
        .collect()
}

/// The ids matching a query, sorted by `sort_field`.
pub async fn ids(index: &str, query: Value, sort_field: &str) -> Vec<String> {
    refresh(index).await;
    let (status, body) = es(
        reqwest::Method::POST,
        &format!("{index}/_search"),
        Some(json!({"query": query, "size": 10000, "sort": [{sort_field: "asc"}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The indices an alias points at.
pub async fn alias_targets(alias: &str) -> Vec<String> {
    let (status, body) = es(reqwest::Method::GET, &format!("_alias/{alias}"), None).await;
    if status == 404 {
        return Vec::new();
    }
    body.as_object().unwrap().keys().cloned().collect()
}

pub async fn index_exists(index: &str) -> bool {
    es(reqwest::Method::HEAD, index, None).await.0 == 200
}

/// An HTTP proxy in front of Elasticsearch that refuses `_bulk` requests larger than a limit
/// with `413` (as a real cluster does above `http.max_content_length`) and records the largest
/// number of operations any `_bulk` request carried.
pub struct BulkLimitProxy {
    pub url: String,
    max_ops: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl BulkLimitProxy {
    pub async fn start(limit_bytes: usize) -> BulkLimitProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let max_ops = Arc::new(AtomicUsize::new(0));
        let upstream = es_url().trim_end_matches('/').to_owned();
        let client = reqwest::Client::new();
        let max = max_ops.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (upstream, client, max) = (upstream.clone(), client.clone(), max.clone());
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let path = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                if parts.uri.path().ends_with("_bulk") {
                    let ops = bytes
                        .split(|b| *b == b'\n')
                        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
                        .filter(|v| {
                            ["create", "index", "delete", "update"]
                                .iter()
                                .any(|k| v.get(*k).is_some_and(|a| a.get("_index").is_some()))
                        })
                        .count();
                    max.fetch_max(ops, Ordering::SeqCst);
                    if bytes.len() > limit_bytes {
                        let body = json!({"error": {"type": "content_too_long_exception",
                            "reason": "request entity too large"}, "status": 413});
                        return axum::response::Response::builder()
                            .status(413)
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(body.to_string()))
                            .unwrap();
                    }
                }
                let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
                let mut forwarded = client.request(method, format!("{upstream}{path}"));
                if let Some(t) = parts.headers.get("content-type") {
                    forwarded = forwarded.header("content-type", t.as_bytes());
                }
                let response = forwarded.body(bytes.to_vec()).send().await.unwrap();
                let status = response.status().as_u16();
                let body = response.bytes().await.unwrap();
                axum::response::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body))
                    .unwrap()
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        BulkLimitProxy { url, max_ops, task }
    }

    /// The most operations one `_bulk` request carried since the last reset.
    pub fn max_bulk_ops(&self) -> usize {
        self.max_ops.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.max_ops.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for BulkLimitProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
