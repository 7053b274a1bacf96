//! Operations endpoints: `/healthz` (the process answers), `/readyz` (PostgreSQL and
//! Elasticsearch answer, the projector status was read and the Kafka watermarks of its topics
//! fetched once, so answers carry their lag), `/metrics` (Prometheus) and `/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::state::AppState;

/// Liveness.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: every store answers, and the freshness of answers is known.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let postgres = match state.db().await {
        Ok(mut db) => db.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    };
    let elasticsearch = state.search.ping().await;
    let status_read = state.board.loaded();
    let watermarks = state.watermarks.ready();
    let status = if postgres && elasticsearch && status_read && watermarks {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"postgres": postgres, "elasticsearch": elasticsearch,
                    "projector_status": status_read, "watermarks": watermarks})),
    )
        .into_response()
}

/// Prometheus metrics.
pub async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}

/// The OpenAPI document.
pub async fn openapi(State(state): State<AppState>) -> Json<Value> {
    Json(crate::openapi::document(
        &state.config,
        &state.board.current().views,
    ))
}
