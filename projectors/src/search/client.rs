//! A small Elasticsearch REST client (reqwest + JSON) with exactly the calls the search sink
//! uses: index creation and deletion, realtime `_mget` with sequence numbers, `_bulk` with
//! per-item outcomes, `_refresh`, `_search` and atomic `_aliases`. Credentials in the URL
//! (`https://user:password@host:9200`) are sent as basic auth.

use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

/// A failed call, classified for the runner.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EsError {
    /// Worth retrying: connection problems, timeouts, 429, 5xx, a missing index.
    #[error("elasticsearch unavailable: {0}")]
    Transient(String),
    /// Retrying cannot help (400 and other client errors).
    #[error("elasticsearch rejected the request: {0}")]
    Permanent(String),
    /// A whole `_bulk` request was refused with a client error (413 too large, 400, 401…):
    /// the caller decides whether splitting it can help (see [`splittable_status`]).
    #[error("elasticsearch rejected the bulk request ({status}): {message}")]
    BulkRejected {
        /// The HTTP status.
        status: u16,
        /// What Elasticsearch said.
        message: String,
    },
}

/// Whether a request-level `_bulk` refusal may be caused by the request's contents, so a
/// smaller request can succeed: 413 (too large) and 400 (a malformed operation). Others (401,
/// 403, 404…) are about the cluster or the credentials and are the same for any request.
pub fn splittable_status(status: u16) -> bool {
    status == 413 || status == 400
}

/// Whether an HTTP status (of a call or a bulk item) is worth retrying.
pub fn transient_status(status: u16) -> bool {
    status == 429 || status == 408 || status >= 500
}

/// A document as stored, with what a conditional write needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// `_source`.
    pub source: Value,
    /// `_seq_no`.
    pub seq_no: i64,
    /// `_primary_term`.
    pub primary_term: i64,
}

/// One bulk action.
#[derive(Debug, Clone, PartialEq)]
pub enum BulkOp {
    /// `create`: fails with 409 if the document exists.
    Create {
        /// Index.
        index: String,
        /// Document id.
        id: String,
        /// The document.
        doc: Value,
    },
    /// `index` with `if_seq_no`/`if_primary_term`: fails with 409 if it changed meanwhile.
    Replace {
        /// Index.
        index: String,
        /// Document id.
        id: String,
        /// The document.
        doc: Value,
        /// Expected `_seq_no`.
        seq_no: i64,
        /// Expected `_primary_term`.
        primary_term: i64,
    },
    /// `delete` with `if_seq_no`/`if_primary_term`.
    Delete {
        /// Index.
        index: String,
        /// Document id.
        id: String,
        /// Expected `_seq_no`.
        seq_no: i64,
        /// Expected `_primary_term`.
        primary_term: i64,
    },
}

impl BulkOp {
    /// The document it writes (none for a delete).
    pub fn into_doc(self) -> Option<Value> {
        match self {
            BulkOp::Create { doc, .. } | BulkOp::Replace { doc, .. } => Some(doc),
            BulkOp::Delete { .. } => None,
        }
    }
}

/// The outcome of one bulk item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Written: the new sequence number and term (absent for a delete).
    Done {
        /// `_seq_no`.
        seq_no: i64,
        /// `_primary_term`.
        primary_term: i64,
    },
    /// 409: the document changed (or exists) since it was read.
    Conflict,
    /// 429, 5xx: retry later.
    Transient(String),
    /// 400 and other client errors: the document cannot be written.
    Permanent(String),
}

/// The client.
#[derive(Debug, Clone)]
pub struct EsClient {
    http: reqwest::Client,
    base: Url,
    auth: Option<(String, Option<String>)>,
}

impl EsClient {
    /// A client for `url` (credentials in the URL are used as basic auth).
    pub fn new(url: &str) -> Result<EsClient, EsError> {
        let mut base = Url::parse(url).map_err(|e| EsError::Permanent(e.to_string()))?;
        let auth = if base.username().is_empty() {
            None
        } else {
            let decode = |s: &str| {
                percent_decode(s).map_err(|e| EsError::Permanent(format!("ELASTICSEARCH_URL: {e}")))
            };
            Some((
                decode(base.username())?,
                base.password().map(decode).transpose()?,
            ))
        };
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EsError::Permanent(e.to_string()))?;
        Ok(EsClient { http, base, auth })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        content_type: &str,
    ) -> Result<(StatusCode, Value), EsError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| EsError::Permanent(e.to_string()))?;
        let started = std::time::Instant::now();
        let bytes = body.as_ref().map_or(0, String::len);
        let mut request = self.http.request(method, url);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_ref());
        }
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| EsError::Transient(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| EsError::Transient(e.to_string()))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        tracing::trace!(path, bytes, %status, ms = started.elapsed().as_secs_f64() * 1e3,
            "elasticsearch request");
        Ok((status, value))
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, EsError> {
        let (status, value) = self
            .call(
                method,
                path,
                body.map(|b| b.to_string()),
                "application/json",
            )
            .await?;
        if status.is_success() {
            return Ok(value);
        }
        let message = format!("{path}: {status}: {}", error_text(&value));
        if transient_status(status.as_u16()) {
            Err(EsError::Transient(message))
        } else {
            Err(EsError::Permanent(message))
        }
    }

    /// Creates an index with its settings and mappings; true if created, false if it exists.
    pub async fn create_index(&self, index: &str, body: &Value) -> Result<bool, EsError> {
        match self.json(Method::PUT, index, Some(body)).await {
            Ok(_) => Ok(true),
            Err(EsError::Permanent(m)) if m.contains("resource_already_exists_exception") => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes an index (a missing one is fine).
    pub async fn delete_index(&self, index: &str) -> Result<(), EsError> {
        match self.json(Method::DELETE, index, None).await {
            Ok(_) => Ok(()),
            Err(EsError::Permanent(m)) if m.contains("404") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes recent writes of an index visible to search.
    pub async fn refresh(&self, index: &str) -> Result<(), EsError> {
        self.json(Method::POST, &format!("{index}/_refresh"), None)
            .await
            .map(|_| ())
    }

    /// Runs a search and returns the response.
    pub async fn search(&self, index: &str, body: &Value) -> Result<Value, EsError> {
        self.json(Method::POST, &format!("{index}/_search"), Some(body))
            .await
    }

    /// The indices an alias points at (none if the alias does not exist).
    pub async fn alias_targets(&self, alias: &str) -> Result<Vec<String>, EsError> {
        match self
            .json(Method::GET, &format!("_alias/{alias}"), None)
            .await
        {
            Ok(Value::Object(map)) => Ok(map.keys().cloned().collect()),
            Ok(_) => Ok(Vec::new()),
            Err(EsError::Permanent(m)) if m.contains("404") => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Points `alias` at `index` only, in one atomic `_aliases` call.
    pub async fn point_alias(&self, alias: &str, index: &str) -> Result<(), EsError> {
        let mut actions: Vec<Value> = self
            .alias_targets(alias)
            .await?
            .into_iter()
            .filter(|i| i != index)
            .map(|i| json!({"remove": {"index": i, "alias": alias}}))
            .collect();
        actions.push(json!({"add": {"index": index, "alias": alias}}));
        self.json(
            Method::POST,
            "_aliases",
            Some(&json!({ "actions": actions })),
        )
        .await
        .map(|_| ())
    }

    /// Reads documents by (index, id) in realtime; `None` for a missing document. A missing
    /// index is a transient error (it is created at bootstrap; gone means it is being retired).
    pub async fn mget(&self, docs: &[(String, String)]) -> Result<Vec<Option<Stored>>, EsError> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let body = json!({
            "docs": docs.iter().map(|(index, id)| json!({"_index": index, "_id": id})).collect::<Vec<_>>()
        });
        let response = self
            .json(Method::POST, "_mget?realtime=true", Some(&body))
            .await?;
        let found = response["docs"]
            .as_array()
            .ok_or_else(|| EsError::Transient("_mget answered without docs".into()))?;
        if found.len() != docs.len() {
            return Err(EsError::Transient(
                "_mget answered the wrong number of docs".into(),
            ));
        }
        found
            .iter()
            .map(|doc| {
                if !doc["error"].is_null() {
                    return Err(EsError::Transient(format!("_mget: {}", error_text(doc))));
                }
                if doc["found"] != Value::Bool(true) {
                    return Ok(None);
                }
                Ok(Some(Stored {
                    source: doc["_source"].clone(),
                    seq_no: doc["_seq_no"].as_i64().unwrap_or_default(),
                    primary_term: doc["_primary_term"].as_i64().unwrap_or(1),
                }))
            })
            .collect()
    }

    /// Sends a `_bulk` request and returns one result per operation, in order.
    pub async fn bulk(&self, ops: &[BulkOp]) -> Result<Vec<ItemResult>, EsError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut body = String::new();
        for op in ops {
            let (line, doc) = match op {
                BulkOp::Create { index, id, doc } => {
                    (json!({"create": {"_index": index, "_id": id}}), Some(doc))
                }
                BulkOp::Replace {
                    index,
                    id,
                    doc,
                    seq_no,
                    primary_term,
                } => (
                    json!({"index": {"_index": index, "_id": id,
                        "if_seq_no": seq_no, "if_primary_term": primary_term}}),
                    Some(doc),
                ),
                BulkOp::Delete {
                    index,
                    id,
                    seq_no,
                    primary_term,
                } => (
                    json!({"delete": {"_index": index, "_id": id,
                        "if_seq_no": seq_no, "if_primary_term": primary_term}}),
                    None,
                ),
            };
            body.push_str(&line.to_string());
            body.push('\n');
            if let Some(doc) = doc {
                body.push_str(&doc.to_string());
                body.push('\n');
            }
        }
        let (status, response) = self
            .call(Method::POST, "_bulk", Some(body), "application/x-ndjson")
            .await?;
        if !status.is_success() {
            let message = format!("_bulk: {status}: {}", error_text(&response));
            return Err(if transient_status(status.as_u16()) {
                EsError::Transient(message)
            } else {
                EsError::BulkRejected {
                    status: status.as_u16(),
                    message,
                }
            });
        }
        let items = response["items"]
            .as_array()
            .filter(|items| items.len() == ops.len())
            .ok_or_else(|| EsError::Transient("_bulk answered the wrong number of items".into()))?;
        Ok(items.iter().map(item_result).collect())
    }
}

fn item_result(item: &Value) -> ItemResult {
    let Some(body) = item.as_object().and_then(|o| o.values().next()) else {
        return ItemResult::Transient("empty bulk item".into());
    };
    let status = body["status"].as_u64().unwrap_or(500) as u16;
    match status {
        200..=299 | 404 if body["error"].is_null() => ItemResult::Done {
            seq_no: body["_seq_no"].as_i64().unwrap_or_default(),
            primary_term: body["_primary_term"].as_i64().unwrap_or(1),
        },
        409 => ItemResult::Conflict,
        s if transient_status(s) => ItemResult::Transient(format!("{s}: {}", error_text(body))),
        s if body["error"]["type"] == "index_not_found_exception" => {
            ItemResult::Transient(format!("{s}: {}", error_text(body)))
        }
        s => ItemResult::Permanent(format!("{s}: {}", error_text(body))),
    }
}

/// `type: reason` of an Elasticsearch error body (or the body itself).
fn error_text(value: &Value) -> String {
    let error = &value["error"];
    match (error["type"].as_str(), error["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        _ if error.is_string() => error.as_str().unwrap_or_default().to_owned(),
        _ => value.to_string().chars().take(500).collect(),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|e| e.to_string())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_move_from_the_url_to_basic_auth() {
        let client = EsClient::new("https://elastic:p%40ss@es.example:9243/prefix").unwrap();
        assert_eq!(client.base.as_str(), "https://es.example:9243/prefix/");
        assert_eq!(
            client.auth,
            Some(("elastic".to_owned(), Some("p@ss".to_owned())))
        );
        assert_eq!(EsClient::new("http://127.0.0.1:9200").unwrap().auth, None);
    }

    #[test]
    fn bulk_items_are_classified() {
        let ok = json!({"index": {"status": 200, "_seq_no": 4, "_primary_term": 1}});
        assert_eq!(
            item_result(&ok),
            ItemResult::Done {
                seq_no: 4,
                primary_term: 1
            }
        );
        assert_eq!(
            item_result(
                &json!({"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}})
            ),
            ItemResult::Conflict
        );
        assert!(matches!(
            item_result(
                &json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "busy"}}})
            ),
            ItemResult::Transient(_)
        ));
        assert!(matches!(
            item_result(&json!({"index": {"status": 400, "error": {"type": "document_parsing_exception", "reason": "bad"}}})),
            ItemResult::Permanent(m) if m.contains("document_parsing_exception")
        ));
    }
}
