//! The Elasticsearch client of the read API: one `_search` call over an index or alias. Query
//! bodies are built as JSON values by the routes, so user text only ever travels as a value.
//! Answers map to the read API's errors: `400` (a value of the request that Elasticsearch
//! refuses: the request is the cause, a `400` with Elasticsearch's reason, index names
//! removed), `404` (read model not there yet: `503`), `429` and `5xx` (`503`), anything else
//! an internal error.

use serde_json::Value;

use crate::error::ApiError;

/// Longest wait for an Elasticsearch answer.
const TIMEOUT_MS: u64 = 10_000;

/// A small Elasticsearch client (reqwest; credentials may be in the URL).
#[derive(Clone)]
pub struct Search {
    http: reqwest::Client,
    base: String,
}

impl Search {
    /// A client for `base` (e.g. `http://127.0.0.1:9200`).
    pub fn new(base: &str) -> Search {
        Search {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_millis(TIMEOUT_MS))
                .pool_max_idle_per_host(32)
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// Runs `body` against `alias` and returns the hits' sources and sort values, and the total.
    pub async fn search(&self, alias: &str, body: &Value) -> Result<Hits, ApiError> {
        let response = self
            .http
            .post(format!("{}/{alias}/_search", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    ApiError::TimedOut {
                        store: "elasticsearch",
                        what: "request timeout",
                        limit_ms: TIMEOUT_MS,
                    }
                } else {
                    ApiError::Unavailable(format!("elasticsearch unavailable: {e}"))
                }
            })?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| ApiError::Unavailable(format!("elasticsearch answered badly: {e}")))?;
        match status.as_u16() {
            200..=299 => {}
            400 => {
                tracing::info!(%alias, %answer, "elasticsearch rejected a query");
                return Err(ApiError::Rejected(rejection(&answer, alias)));
            }
            404 => return Err(ApiError::ReadModelMissing(alias.to_owned())),
            429 | 500..=599 => {
                return Err(ApiError::Unavailable(format!(
                    "elasticsearch unavailable: {status}"
                )))
            }
            _ => {
                return Err(ApiError::Internal(format!(
                    "elasticsearch {status} for {alias}: {answer}"
                )))
            }
        }
        let total = answer["hits"]["total"]["value"].as_i64();
        let hits = answer["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|hit| {
                let mut source = hit["_source"].clone();
                if let Some(object) = source.as_object_mut() {
                    object.remove("factline"); // the projector's bookkeeping
                }
                (source, hit["sort"].clone())
            })
            .collect();
        Ok(Hits { hits, total })
    }

    /// Whether the server answers.
    pub async fn ping(&self) -> bool {
        self.http
            .get(&self.base)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// What a client is told when Elasticsearch refuses its query: the root cause's type and
/// reason (which name the offending value), without index names, shortened.
fn rejection(answer: &Value, index: &str) -> String {
    let cause = &answer["error"]["root_cause"][0];
    let cause = if cause.is_object() {
        cause
    } else {
        &answer["error"]
    };
    let kind = cause["type"].as_str().unwrap_or("error");
    let reason = cause["reason"].as_str().unwrap_or("no reason given");
    let mut reason = reason.replace(index, "<index>");
    if reason.chars().count() > 300 {
        reason = reason.chars().take(300).collect::<String>() + "…";
    }
    format!(
        "elasticsearch rejected the query built from this request's parameters: {kind}: {reason}"
    )
}

/// A page of hits: (document, sort values) and the total when reported.
#[derive(Debug)]
pub struct Hits {
    /// The documents and their sort values.
    pub hits: Vec<(Value, Value)>,
    /// Total matches.
    pub total: Option<i64>,
}
