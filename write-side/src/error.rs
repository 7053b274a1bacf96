//! The one HTTP error type: every failure a request can meet, its status, and its JSON body
//! `{"error": "...", "problems": [...]}`. Client errors are precise; internal errors get a
//! generic body and a log line.

use crate::auth::AuthError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use factline_schemas::{Problem, Problems};
use serde::Serialize;
use uuid::Uuid;

/// Everything that can go wrong with a command request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or a wrong bearer token (401).
    #[error("{0}")]
    Unauthorized(AuthError),
    /// The key may not send this command (403).
    #[error("this API key may not send {0}")]
    Forbidden(String),
    /// No such command in the catalog (404).
    #[error("unknown command {0}")]
    UnknownCommand(String),
    /// No such route (404).
    #[error("not found")]
    NotFound,
    /// The body's content type is not accepted (415).
    #[error("unsupported content type: expected {expected}")]
    UnsupportedMediaType {
        /// What the endpoint accepts.
        expected: &'static str,
    },
    /// The body is larger than allowed (413).
    #[error("body too large: at most {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The batch has more items than allowed (413).
    #[error("batch too large: {items} items, at most {max}")]
    BatchTooLarge {
        /// How many items were sent (at least).
        items: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not valid JSON (400).
    #[error("invalid JSON")]
    InvalidJson(String),
    /// The body is JSON but not a valid command (400), with every problem.
    #[error("invalid command body")]
    Invalid(Problems),
    /// Something else about the request is wrong (400), e.g. a malformed header.
    #[error("{0}")]
    BadRequest(String),
    /// The Idempotency-Key was used before with a different body (422).
    #[error("idempotency key already used with a different body")]
    IdempotencyConflict,
    /// Nothing was written; try again later (503 with Retry-After).
    #[error("service unavailable: {reason}")]
    Unavailable {
        /// Why (over budget, broker unreachable, registry unreachable).
        reason: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// The write may or may not have happened (503 with Retry-After).
    #[error("the write may or may not have happened")]
    OutcomeUnknown {
        /// The event id the record carries, if it reached the log.
        event_id: Uuid,
        /// What happened.
        reason: String,
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// A bug or misconfiguration (500). The details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// What went wrong, in a sentence.
    pub error: String,
    /// Every problem of the request with its JSON path (empty unless the body was invalid).
    pub problems: Vec<Problem>,
    /// More detail, when useful (e.g. what to do next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The event id of a write whose outcome is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Whether retrying the same request (with the same Idempotency-Key) is safe and may succeed.
    pub retryable: bool,
}

impl ApiError {
    /// The one status mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownCommand(_) | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::InvalidJson(_) | ApiError::Invalid(_) | ApiError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::IdempotencyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } | ApiError::OutcomeUnknown { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds for `Retry-After`, when the answer has one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::Unavailable {
                retry_after_secs, ..
            }
            | ApiError::OutcomeUnknown {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The JSON body (logs internal errors, which get a generic message).
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody {
            error: self.to_string(),
            problems: Vec::new(),
            detail: None,
            event_id: None,
            retryable: false,
        };
        match self {
            ApiError::InvalidJson(message) => {
                body.problems = vec![Problem::new("$", message.clone())];
            }
            ApiError::Invalid(problems) => body.problems = problems.0.clone(),
            ApiError::IdempotencyConflict => {
                body.detail = Some(
                    "send a new Idempotency-Key for a different command, or the same body to \
                     get the original answer"
                        .into(),
                );
            }
            ApiError::Unavailable { .. } => {
                body.detail = Some("nothing was written; retry after the delay".into());
                body.retryable = true;
            }
            ApiError::OutcomeUnknown {
                event_id, reason, ..
            } => {
                body.detail = Some(format!(
                    "{reason}; the event may or may not be on the log. Retrying with the same \
                     Idempotency-Key is safe: it carries the same event_id, so it is recorded \
                     at most once by every read model"
                ));
                body.event_id = Some(*event_id);
                body.retryable = true;
            }
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "internal error");
                body.error = "internal error".into();
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                ApiError::Unauthorized(AuthError::Invalid) => {
                    r#"Bearer realm="factline", error="invalid_token""#
                }
                _ => r#"Bearer realm="factline""#,
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers() {
        let r = ApiError::Unauthorized(AuthError::Missing).into_response();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        let r = ApiError::Unavailable {
            reason: "over budget".into(),
            retry_after_secs: 2,
        }
        .into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(ApiError::IdempotencyConflict.status(), 422);
        assert_eq!(ApiError::PayloadTooLarge { limit: 1 }.status(), 413);
        assert_eq!(
            ApiError::Internal("x".into()).body().error,
            "internal error"
        );
    }

    #[test]
    fn unknown_outcome_says_retry_is_safe() {
        let body = ApiError::OutcomeUnknown {
            event_id: Uuid::nil(),
            reason: "delivery timed out".into(),
            retry_after_secs: 1,
        }
        .body();
        let detail = body.detail.unwrap();
        assert!(detail.contains("may or may not"));
        assert!(detail.contains("Idempotency-Key is safe"));
        assert!(body.retryable);
    }
}
