//! The read API and the write side over HTTP: JSON in and out, bearer keys when configured,
//! and every failure mapped to a [`CliError`] naming the service and what it said.

use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;

/// One HTTP service.
#[derive(Debug, Clone)]
pub struct Service {
    name: &'static str,
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// A JSON answer with its status.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, when sent.
    pub retry_after: Option<Duration>,
    /// The body.
    pub body: Value,
}

impl Service {
    /// The service `name` (for messages) at `base`.
    pub fn new(name: &'static str, base: &str, key: Option<String>) -> Service {
        Service {
            name,
            base: base.to_owned(),
            key,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    fn label(&self) -> String {
        format!("the {} at {}", self.name, self.base)
    }

    /// `GET path` with `query`; a 2xx body, [`CliError::NotFound`] on 404, otherwise an error.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, CliError> {
        let mut request = self.http.get(format!("{}{path}", self.base)).query(query);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let answer = self.send(request).await?;
        self.ok(answer, path)
    }

    /// `POST path` with a raw body of `content_type`; the answer whatever its status.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, CliError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            service: self.label(),
            message: error_chain(&e),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(|e| CliError::Unreachable {
            service: self.label(),
            message: error_chain(&e),
        })?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// The body of a 2xx answer, or the error it stands for.
    pub fn ok(&self, answer: Answer, what: &str) -> Result<Value, CliError> {
        match answer.status {
            200..=299 => Ok(answer.body),
            404 => Err(CliError::NotFound(
                message_of(&answer.body).unwrap_or_else(|| what.to_owned()),
            )),
            status => Err(CliError::Refused {
                service: self.label(),
                status: status.to_string(),
                message: message_of(&answer.body).unwrap_or_else(|| answer.body.to_string()),
            }),
        }
    }
}

/// The `error` of a factline JSON error body (with the parameter it names, if any).
fn message_of(body: &Value) -> Option<String> {
    let error = body.get("error")?.as_str()?;
    Some(match body.get("parameter").and_then(Value::as_str) {
        Some(parameter) if !error.starts_with(parameter) => format!("{parameter}: {error}"),
        _ => error.to_owned(),
    })
}

/// Why a request got no answer, in a few words: the root cause (e.g. `Connection refused (os
/// error 111)`), or the time limit.
fn error_chain(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer within 60 s".into();
    }
    let mut root: &dyn std::error::Error = error;
    while let Some(cause) = root.source() {
        root = cause;
    }
    root.to_string()
}
