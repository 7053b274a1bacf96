//! The one error type of the registry's HTTP API, in Confluent's shape:
//! `{"error_code": N, "message": "..."}` with Confluent's codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answered to a client, or an internal failure (logged, answered generically).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 40401.
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    /// 40402.
    #[error("Version {0} not found.")]
    VersionNotFound(String),
    /// 40403.
    #[error("Schema not found")]
    SchemaNotFound,
    /// 40404: a hard delete needs a soft delete first.
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    NotSoftDeleted(String),
    /// 409.
    #[error("Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: {details:?}")]
    Incompatible {
        /// The subject.
        subject: String,
        /// What is incompatible.
        details: Vec<String>,
    },
    /// 42201.
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    /// 42202.
    #[error("The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\"")]
    InvalidVersion(String),
    /// 42203.
    #[error("Invalid compatibility level: {0}. Valid values are NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE")]
    InvalidCompatibilityLevel(String),
    /// 400 for a request body that is not what the endpoint takes.
    #[error("Unrecognized request body: {0}")]
    BadRequest(String),
    /// 404 for an unknown route.
    #[error("HTTP 404 Not Found")]
    NoSuchRoute,
    /// 50001: storage failed; details go to the log only. 50002 with 503 and `Retry-After`
    /// when the database did not answer in time or could not be reached.
    #[error("Error in the backend data store")]
    Storage(#[from] StorageError),
    /// 50002 with 503 and `Retry-After`: the request ran out of its time on the database.
    #[error("Operation timed out")]
    TimedOut,
}

/// A PostgreSQL failure, kept out of client answers.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A query failed.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// No connection could be had.
    #[error("connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl StorageError {
    /// Whether the database was unreachable or too slow (worth retrying later), as opposed to
    /// a failing statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StorageError::Pool(_) => true,
            StorageError::Database(e) => match e.code() {
                None => true, // I/O, closed connection, timeouts
                Some(code) => {
                    *code == tokio_postgres::error::SqlState::QUERY_CANCELED
                        || matches!(&code.code()[..2], "08" | "53" | "57")
                }
            },
        }
    }
}

/// What a client is told to wait before retrying a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

impl From<tokio_postgres::Error> for RegistryError {
    fn from(e: tokio_postgres::Error) -> Self {
        RegistryError::Storage(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for RegistryError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        RegistryError::Storage(e.into())
    }
}

impl RegistryError {
    /// The HTTP status and Confluent error code.
    pub fn codes(&self) -> (StatusCode, u32) {
        match self {
            RegistryError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            RegistryError::VersionNotFound(_) => (StatusCode::NOT_FOUND, 40402),
            RegistryError::SchemaNotFound => (StatusCode::NOT_FOUND, 40403),
            RegistryError::NotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            RegistryError::Incompatible { .. } => (StatusCode::CONFLICT, 409),
            RegistryError::InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            RegistryError::InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            RegistryError::InvalidCompatibilityLevel(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, 42203)
            }
            RegistryError::BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            RegistryError::NoSuchRoute => (StatusCode::NOT_FOUND, 404),
            RegistryError::Storage(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, 50002)
            }
            RegistryError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
            RegistryError::TimedOut => (StatusCode::SERVICE_UNAVAILABLE, 50002),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        if let RegistryError::Storage(inner) = &self {
            tracing::error!(error = %inner, "storage failure");
        }
        if let RegistryError::TimedOut = &self {
            tracing::warn!("request timed out on the database");
        }
        let (status, code) = self.codes();
        let message = match code {
            50002 => "Operation timed out".to_owned(),
            _ => self.to_string(),
        };
        let body = serde_json::json!({ "error_code": code, "message": message });
        let mut response = crate::routes::json_response(status, body);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}
