//! Request bodies: content-type checks, size limits and JSON parsing, every rejection turned into
//! an [`ApiError`] so clients see one error shape (`415`, `413`, `400` with the parse problem).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// What a body's content type says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `application/json` (or `application/*+json`).
    Json,
    /// `application/x-ndjson`: one JSON value per line.
    Ndjson,
}

/// The media type of the `Content-Type` header, lower-cased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(media)
}

/// The kind of body, if the content type is one of `accepted`.
pub fn body_kind(headers: &HeaderMap, accepted: &[BodyKind]) -> Result<BodyKind, ApiError> {
    let kind = match media_type(headers).as_deref() {
        Some("application/json") => Some(BodyKind::Json),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => Some(BodyKind::Json),
        Some("application/x-ndjson") | Some("application/ndjson") => Some(BodyKind::Ndjson),
        _ => None,
    };
    match kind {
        Some(kind) if accepted.contains(&kind) => Ok(kind),
        _ => Err(ApiError::UnsupportedMediaType {
            expected: if accepted.contains(&BodyKind::Ndjson) {
                "application/json or application/x-ndjson"
            } else {
                "application/json"
            },
        }),
    }
}

/// Reads the whole body, at most `limit` bytes (a declared larger `Content-Length` is refused
/// before reading). The route must also carry `DefaultBodyLimit::max(limit)`.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match Bytes::from_request(request, &()).await {
        Ok(bytes) if bytes.len() > limit => Err(ApiError::PayloadTooLarge { limit }),
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(rejection) => Err(ApiError::BadRequest(format!(
            "cannot read the body: {}",
            rejection.body_text()
        ))),
    }
}

/// Parses `bytes` as JSON into `T`, a parse failure being an [`ApiError::InvalidJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Like `axum::Json`, but every rejection is an [`ApiError`] (415, 413, 400) in the common shape.
/// The size limit is the route's `DefaultBodyLimit`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        body_kind(request.headers(), &[BodyKind::Json])?;
        let bytes = match Bytes::from_request(request, &()).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::BadRequest("body too large".into()));
            }
            Err(rejection) => return Err(ApiError::BadRequest(rejection.body_text())),
        };
        parse_json(&bytes).map(ApiJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_type(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn content_types() {
        let json = [BodyKind::Json];
        assert_eq!(
            body_kind(&with_type("application/json; charset=utf-8"), &json).unwrap(),
            BodyKind::Json
        );
        assert_eq!(
            body_kind(&with_type("application/vnd.factline+json"), &json).unwrap(),
            BodyKind::Json
        );
        assert!(body_kind(&with_type("text/plain"), &json).is_err());
        assert!(body_kind(&HeaderMap::new(), &json).is_err());
        assert!(body_kind(&with_type("application/x-ndjson"), &json).is_err());
        let both = [BodyKind::Json, BodyKind::Ndjson];
        assert_eq!(
            body_kind(&with_type("application/x-ndjson"), &both).unwrap(),
            BodyKind::Ndjson
        );
    }

    #[test]
    fn invalid_json_is_a_problem_at_the_root() {
        let error = parse_json::<serde_json::Value>(b"{\"a\":").unwrap_err();
        assert_eq!(error.status(), 400);
        assert_eq!(error.body().problems[0].path, "$");
    }
}
