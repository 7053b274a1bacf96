//! The one HTTP error type of the read API and its JSON body
//! `{"error": "...", "parameter": "..."}`: precise for clients, generic (and logged) for
//! internal failures.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Everything a query can meet.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, unknown or malformed (400).
    #[error("{parameter}: {message}")]
    BadParameter {
        /// The parameter (query parameter, path segment or header).
        parameter: String,
        /// What is wrong.
        message: String,
    },
    /// No or a wrong bearer key (401).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The entity does not exist (404).
    #[error("{0} not found")]
    NotFound(String),
    /// The projection did not reach the requested position in time (503 + Retry-After).
    #[error("{message}")]
    NotYetConsistent {
        /// The explanation.
        message: String,
        /// Where the projection stands (projection, position, lag).
        detail: Value,
    },
    /// The search engine refused a query built from valid-looking parameters (400): the
    /// request is the cause, so retrying it cannot help.
    #[error("{0}")]
    Rejected(String),
    /// A store did not answer within its time limit (503 + Retry-After).
    #[error("{store} did not answer within {limit_ms} ms ({what})")]
    TimedOut {
        /// `postgresql` or `elasticsearch`.
        store: &'static str,
        /// Which limit was hit, e.g. `statement timeout`.
        what: &'static str,
        /// The limit.
        limit_ms: u64,
    },
    /// The read model is not there (yet): its projector has not created it, or the version
    /// asked for was just retired (503 + Retry-After).
    #[error("read model {0} not available yet")]
    ReadModelMissing(String),
    /// A store is down or answered unexpectedly (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected answer; logged, generic body (500).
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 naming `parameter`.
    pub fn bad(parameter: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter { .. } | ApiError::Rejected(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotYetConsistent { .. }
            | ApiError::TimedOut { .. }
            | ApiError::ReadModelMissing(_)
            | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(error: deadpool_postgres::PoolError) -> ApiError {
        ApiError::Unavailable(format!("postgresql unavailable: {error}"))
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(error: tokio_postgres::Error) -> ApiError {
        match error.as_db_error() {
            // undefined_table: the projector has not created its read model yet
            Some(db) if db.code().code() == "42P01" => ApiError::ReadModelMissing(
                db.message().split('"').nth(1).unwrap_or("table").to_owned(),
            ),
            // undefined_column: the running projector's tables differ from the declaration
            // the read API loaded (e.g. the code and declarative versions of a model)
            Some(db) if db.code().code() == "42703" => ApiError::Unavailable(format!(
                "read model does not match its declaration: {}",
                db.message()
            )),
            Some(db) => ApiError::Internal(format!("postgresql: {}", db.message())),
            None => ApiError::Unavailable(format!("postgresql unavailable: {error}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::BadParameter { parameter, message } => {
                json!({"error": format!("{parameter}: {message}"), "parameter": parameter})
            }
            ApiError::NotYetConsistent { message, detail } => {
                json!({"error": message, "freshness": detail})
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                json!({"error": "internal error"})
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                json!({"error": detail})
            }
            ApiError::Rejected(detail) => json!({"error": detail, "parameter": null}),
            ApiError::TimedOut {
                store,
                what,
                limit_ms,
            } => {
                tracing::warn!(store, what, limit_ms, "store timed out");
                json!({"error": self.to_string(), "store": store, "timeout": what,
                       "timeout_ms": limit_ms})
            }
            other => json!({"error": other.to_string()}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(
            self,
            ApiError::NotYetConsistent { .. }
                | ApiError::Unavailable(_)
                | ApiError::TimedOut { .. }
                | ApiError::ReadModelMissing(_)
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
