//! Elasticsearch side of the bench: the raw `_bulk` limit — the same documents the search
//! projectors write, in requests of the projector's batch size, one request in flight — and
//! cleanup of the bench's indices.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// An Elasticsearch failure of the bench.
#[derive(Debug, thiserror::Error)]
pub enum EsBenchError {
    /// The request failed.
    #[error("elasticsearch: {0}")]
    Http(#[from] reqwest::Error),
    /// Elasticsearch refused a request.
    #[error("elasticsearch answered {status} to {what}: {body}")]
    Refused {
        /// What was asked.
        what: String,
        /// Status.
        status: u16,
        /// Body (truncated).
        body: String,
    },
    /// Some bulk items failed.
    #[error("{0} bulk items failed, first: {1}")]
    Items(u64, String),
}

/// A small Elasticsearch client over reqwest (URL may carry `user:password@`).
#[derive(Debug, Clone)]
pub struct Es {
    http: reqwest::Client,
    url: String,
}

impl Es {
    /// A client for `url`.
    pub fn new(url: &str) -> Es {
        Es {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap_or_default(),
            url: url.trim_end_matches('/').to_owned(),
        }
    }

    async fn check(&self, what: &str, response: reqwest::Response) -> Result<Value, EsBenchError> {
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(EsBenchError::Refused {
                what: what.to_owned(),
                status: status.as_u16(),
                body: text.chars().take(300).collect(),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates `index` with the mappings of `mapping_file` when it exists (the projector's own
    /// mapping), else with dynamic mappings.
    pub async fn create_index(&self, index: &str, mapping_file: &Path) -> Result<(), EsBenchError> {
        let body = std::fs::read_to_string(mapping_file)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|v| {
                if v.get("mappings").is_some() {
                    v
                } else {
                    json!({ "mappings": v })
                }
            })
            .unwrap_or_else(|| json!({}));
        let response = self
            .http
            .put(format!("{}/{index}", self.url))
            .json(&body)
            .send()
            .await?;
        self.check(&format!("create index {index}"), response)
            .await?;
        Ok(())
    }

    /// Deletes the indices matching `pattern` (best effort). Elasticsearch refuses wildcard
    /// deletes by default (`action.destructive_requires_name`), so the names are listed first.
    pub async fn delete_indices(&self, pattern: &str) {
        #[derive(serde::Deserialize)]
        struct Listed {
            index: String,
        }
        let listed = match self
            .http
            .get(format!(
                "{}/_cat/indices/{pattern}?h=index&format=json",
                self.url
            ))
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                response.json::<Vec<Listed>>().await.unwrap_or_default()
            }
            Ok(response) => {
                tracing::warn!(status = %response.status(), "cannot list bench indices");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot list bench indices");
                return;
            }
        };
        let names: Vec<String> = listed.into_iter().map(|l| l.index).collect();
        for chunk in names.chunks(50) {
            let result = self
                .http
                .delete(format!("{}/{}", self.url, chunk.join(",")))
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "cannot delete bench indices")
                }
                Err(error) => tracing::warn!(%error, "cannot delete bench indices"),
            }
        }
    }

    /// Whether Elasticsearch answers.
    pub async fn ping(&self) -> bool {
        self.http
            .get(&self.url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Indexes `docs` (`_id`, document) into `index` with `_bulk` requests of `per_request`
    /// documents, one at a time. Returns the time spent in requests.
    pub async fn bulk_raw(
        &self,
        index: &str,
        docs: &[(String, Value)],
        per_request: usize,
    ) -> Result<Duration, EsBenchError> {
        let mut elapsed = Duration::ZERO;
        for chunk in docs.chunks(per_request.max(1)) {
            let mut body = String::with_capacity(chunk.len() * 600);
            for (id, doc) in chunk {
                body.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
                body.push('\n');
                body.push_str(&doc.to_string());
                body.push('\n');
            }
            let started = Instant::now();
            let response = self
                .http
                .post(format!("{}/_bulk", self.url))
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await?;
            let answer = self.check("_bulk", response).await?;
            elapsed += started.elapsed();
            if answer.get("errors").and_then(Value::as_bool) == Some(true) {
                let items = answer.get("items").and_then(Value::as_array);
                let failed: Vec<&Value> = items
                    .map(|items| {
                        items
                            .iter()
                            .filter(|i| i.pointer("/index/error").is_some())
                            .collect()
                    })
                    .unwrap_or_default();
                return Err(EsBenchError::Items(
                    failed.len() as u64,
                    failed
                        .first()
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect(),
                ));
            }
        }
        Ok(elapsed)
    }
}
