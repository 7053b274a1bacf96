//! What a request says about itself in headers: correlation and causation ids, the W3C trace
//! context (`traceparent`, kept when valid, otherwise a new one), and the `Idempotency-Key`.

use crate::error::ApiError;
use crate::idempotency::valid_key;
use axum::http::HeaderMap;
use uuid::Uuid;

/// The request-level facts copied into every event's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMeta {
    /// `X-Correlation-Id`, or a new UUID.
    pub correlation_id: String,
    /// `X-Causation-Id`, if sent.
    pub causation_id: Option<String>,
    /// The incoming `traceparent` when valid, or a new one.
    pub traceparent: String,
    /// `Idempotency-Key`, if sent.
    pub idempotency_key: Option<String>,
}

/// Whether `value` is a token of 1 to `max` printable ASCII characters (space to `~`) that
/// neither starts nor ends with a space: the form of id headers and idempotency keys, and the
/// `pattern` the OpenAPI document gives them (HTTP strips spaces around header values anyway).
pub fn valid_token(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
}

/// An id header value worth keeping: a token of at most 200 characters.
fn id_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(v) if valid_token(v, 200) => Ok(Some(v.to_string())),
        _ => Err(ApiError::BadRequest(format!(
            "header {name} must be 1 to 200 printable ASCII characters, without leading or \
             trailing spaces"
        ))),
    }
}

/// Whether `value` is a valid W3C `traceparent` (version 00, non-zero ids).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [version, trace, span, flags]
        if hex(version, 2) && *version != "ff" && hex(trace, 32) && hex(span, 16) && hex(flags, 2)
            && trace.bytes().any(|b| b != b'0') && span.bytes().any(|b| b != b'0'))
}

/// A new `traceparent` with random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

impl RequestMeta {
    /// Reads the headers (a malformed id header or idempotency key is a `400`).
    pub fn from_headers(headers: &HeaderMap) -> Result<RequestMeta, ApiError> {
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| valid_traceparent(v))
            .map(String::from)
            .unwrap_or_else(new_traceparent);
        let idempotency_key = match headers.get("idempotency-key") {
            None => None,
            Some(value) => match value.to_str() {
                Ok(key) if valid_key(key) => Some(key.to_string()),
                _ => {
                    return Err(ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 255 printable ASCII characters, without \
                         leading or trailing spaces"
                            .into(),
                    ))
                }
            },
        };
        Ok(RequestMeta {
            correlation_id: id_header(headers, "x-correlation-id")?
                .unwrap_or_else(|| Uuid::new_v4().to_string()),
            causation_id: id_header(headers, "x-causation-id")?,
            traceparent,
            idempotency_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn traceparent_is_kept_when_valid() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(tp));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("garbage"));
        assert!(valid_traceparent(&new_traceparent()));
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static(tp));
        headers.insert("x-correlation-id", HeaderValue::from_static("corr-1"));
        let meta = RequestMeta::from_headers(&headers).unwrap();
        assert_eq!(meta.traceparent, tp);
        assert_eq!(meta.correlation_id, "corr-1");
        assert_eq!(meta.causation_id, None);
    }

    #[test]
    fn tokens_are_printable_ascii_without_outer_spaces() {
        assert!(valid_token("a", 1));
        assert!(valid_token("a b~!", 5));
        assert!(!valid_token("", 5));
        assert!(!valid_token("abcdef", 5));
        assert!(!valid_token(" a", 5));
        assert!(!valid_token("a ", 5));
        assert!(!valid_token(" ", 5));
        assert!(!valid_token("a\tb", 5));
        assert!(!valid_token("é", 5));
        let mut headers = HeaderMap::new();
        headers.insert("x-correlation-id", HeaderValue::from_static(""));
        assert_eq!(
            RequestMeta::from_headers(&headers).unwrap_err().status(),
            400
        );
        headers.insert(
            "x-correlation-id",
            HeaderValue::from_str(&"c".repeat(201)).unwrap(),
        );
        assert_eq!(
            RequestMeta::from_headers(&headers).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn new_ids_when_absent_and_bad_keys_rejected() {
        let meta = RequestMeta::from_headers(&HeaderMap::new()).unwrap();
        assert!(Uuid::parse_str(&meta.correlation_id).is_ok());
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", HeaderValue::from_static(""));
        assert_eq!(
            RequestMeta::from_headers(&headers).unwrap_err().status(),
            400
        );
    }
}
