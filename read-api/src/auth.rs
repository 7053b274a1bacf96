//! Optional bearer authentication: when `READ_API_KEYS_SHA256` lists SHA-256 hashes, every
//! query must carry `Authorization: Bearer <key>` whose hash is one of them (compared in
//! constant time). Health, readiness and the web console's page and assets (no data: the
//! console sends the key with each query it makes) stay open.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Whether `presented` hashes to one of `hashes`.
pub fn accepted(hashes: &[[u8; 32]], presented: &str) -> bool {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    hashes.iter().fold(false, |found, hash| {
        let same = hash
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        found | same
    })
}

/// The middleware: passes open paths and requests with an accepted key.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let hashes = &state.config.api_key_hashes;
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/readyz") || crate::console::is_console(path);
    if hashes.is_empty() || open {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => ApiError::Unauthorized("missing bearer key").into_response(),
        Some(key) if accepted(hashes, key.trim()) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("unknown bearer key").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_keys_pass() {
        let hash: [u8; 32] = Sha256::digest(b"secret").into();
        assert!(accepted(&[hash], "secret"));
        assert!(!accepted(&[hash], "secret2"));
        assert!(!accepted(&[], "secret"));
    }
}
