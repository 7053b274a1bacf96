//! A small client for the schema registry's REST API, for the tools: register a schema under a
//! subject and check a schema's compatibility with a subject's latest version.

use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry could not be reached.
    #[error("schema registry unreachable at {url}: {message}")]
    Unreachable {
        /// The registry's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry answered with an error status.
    #[error("schema registry answered {status} for {subject}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The subject of the call.
        subject: String,
        /// The registry's error message (or body).
        message: String,
    },
    /// The registry answered 2xx with a body we do not understand.
    #[error("unexpected schema registry response for {subject}: {message}")]
    Unexpected {
        /// The subject of the call.
        subject: String,
        /// What was wrong with it.
        message: String,
    },
}

/// The result of a compatibility check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// The schema is compatible with the subject's latest version.
    Compatible,
    /// The subject has no version yet: anything is compatible.
    NotRegistered,
    /// Incompatible, with the registry's messages (which name the fields).
    Incompatible(Vec<String>),
}

/// A client for one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base_url: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct RegisterResponse {
    id: u32,
}

#[derive(Deserialize)]
struct CompatibilityResponse {
    is_compatible: bool,
    #[serde(default)]
    messages: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: u32,
    #[serde(default)]
    message: String,
}

/// Percent-encodes a subject for a URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RegistryClient {
    /// A client for the registry at `base_url` (e.g. `http://127.0.0.1:8081`).
    pub fn new(base_url: &str) -> Result<RegistryClient, RegistryError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RegistryError::Unreachable {
                url: base_url.to_string(),
                message: e.to_string(),
            })?;
        Ok(RegistryClient {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    async fn post(
        &self,
        path: &str,
        subject: &str,
        schema_json: &str,
    ) -> Result<(u16, String), RegistryError> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .http
            .post(&url)
            .header("content-type", CONTENT_TYPE)
            .header("accept", CONTENT_TYPE)
            .json(&json!({ "schema": schema_json }))
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: self.base_url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| RegistryError::Unexpected {
                subject: subject.to_string(),
                message: e.to_string(),
            })?;
        Ok((status, body))
    }

    fn status_error(status: u16, subject: &str, body: &str) -> RegistryError {
        let message = serde_json::from_str::<ErrorBody>(body)
            .map(|e| format!("{} (error code {})", e.message, e.error_code))
            .unwrap_or_else(|_| body.chars().take(500).collect());
        RegistryError::Status {
            status,
            subject: subject.to_string(),
            message,
        }
    }

    /// Registers `schema_json` under `subject` (idempotent: an existing identical schema
    /// returns its id). Returns the schema id.
    pub async fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let (status, body) = self.post(&path, subject, schema_json).await?;
        if !(200..300).contains(&status) {
            return Err(Self::status_error(status, subject, &body));
        }
        serde_json::from_str::<RegisterResponse>(&body)
            .map(|r| r.id)
            .map_err(|e| RegistryError::Unexpected {
                subject: subject.to_string(),
                message: e.to_string(),
            })
    }

    /// Checks `schema_json` against the latest version of `subject`.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema_json: &str,
    ) -> Result<Compatibility, RegistryError> {
        let path = format!(
            "/compatibility/subjects/{}/versions/latest?verbose=true",
            encode_segment(subject)
        );
        let (status, body) = self.post(&path, subject, schema_json).await?;
        if status == 404 {
            // 40401 subject not found, 40402 version not found: nothing to be incompatible with.
            let code = serde_json::from_str::<ErrorBody>(&body).map_or(0, |e| e.error_code);
            if matches!(code, 40401 | 40402) {
                return Ok(Compatibility::NotRegistered);
            }
        }
        if !(200..300).contains(&status) {
            return Err(Self::status_error(status, subject, &body));
        }
        let response: CompatibilityResponse =
            serde_json::from_str(&body).map_err(|e| RegistryError::Unexpected {
                subject: subject.to_string(),
                message: e.to_string(),
            })?;
        if response.is_compatible {
            Ok(Compatibility::Compatible)
        } else {
            Ok(Compatibility::Incompatible(
                response
                    .messages
                    .into_iter()
                    .map(|m| match m {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
            ))
        }
    }
}

/// Why a reader with schema `new` cannot read data written with `old` (BACKWARD
/// compatibility, the registry's default), computed locally; `None` when it can or when either
/// schema does not parse. Complements the registry's own messages with the field's name.
pub fn explain_incompatibility(old: &str, new: &str) -> Option<String> {
    let old = apache_avro::Schema::parse_str(old).ok()?;
    let new = apache_avro::Schema::parse_str(new).ok()?;
    apache_avro::schema_compatibility::SchemaCompatibility::can_read(&old, &new)
        .err()
        .map(|e| {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                message.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            message
        })
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

impl RegistryClient {
    /// The latest schema registered under `subject`, or `None` when there is none.
    pub async fn latest_schema(&self, subject: &str) -> Result<Option<String>, RegistryError> {
        let url = format!(
            "{}/subjects/{}/versions/latest",
            self.base_url,
            encode_segment(subject)
        );
        let response = self
            .http
            .get(&url)
            .header("accept", CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable {
                url: self.base_url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| RegistryError::Unexpected {
                subject: subject.to_string(),
                message: e.to_string(),
            })?;
        if status == 404 {
            return Ok(None);
        }
        if !(200..300).contains(&status) {
            return Err(Self::status_error(status, subject, &body));
        }
        serde_json::from_str::<SchemaResponse>(&body)
            .map(|r| Some(r.schema))
            .map_err(|e| RegistryError::Unexpected {
                subject: subject.to_string(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_explanation_names_the_field() {
        let old = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
        let added_optional = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}]}"#;
        let added_required = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"priority","type":"string"}]}"#;
        assert_eq!(explain_incompatibility(old, added_optional), None);
        let why = explain_incompatibility(old, added_required).unwrap();
        assert!(why.contains("priority"), "{why}");
    }

    #[test]
    fn subjects_are_path_safe() {
        assert_eq!(
            encode_segment("orders-factline.orders.OrderPlaced"),
            "orders-factline.orders.OrderPlaced"
        );
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
