//! The projector's HTTP endpoints: `/healthz` (JSON state) and `/metrics` (Prometheus text).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// What `/healthz` reports, updated by the consume loop.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// The projector name.
    pub projector: String,
    /// Its version.
    pub version: u32,
    /// `starting`, `running`, `retrying` (a transient failure is being retried: the sink is
    /// unavailable, or the registry cannot give a record's schema yet; `last_error` says
    /// which) or `stopping`.
    pub state: &'static str,
    /// The last transient error while retrying.
    pub last_error: Option<String>,
    /// Batches committed since start.
    pub batches: u64,
    /// The `group.instance.id` this instance joined with (none: dynamic membership).
    pub instance_id: Option<String>,
    /// The partitions assigned to this instance, as `topic/partition`, sorted.
    pub partitions: Vec<String>,
}

/// Shared, updatable health.
pub type SharedHealth = Arc<Mutex<Health>>;

/// Sets a field of the shared health (a poisoned lock is recovered: health is informational).
pub fn update(health: &SharedHealth, f: impl FnOnce(&mut Health)) {
    let mut guard = match health.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut guard);
}

/// The router: `/healthz` is 200 while the loop runs (also while it retries: the process heals
/// itself, restarting it would not help) and 503 while starting or stopping.
pub fn router(health: SharedHealth) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn healthz(State(health): State<SharedHealth>) -> impl IntoResponse {
    let snapshot = match health.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let status = match snapshot.state {
        "running" | "retrying" => StatusCode::OK,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(snapshot))
}

async fn metrics() -> impl IntoResponse {
    let handle = crate::telemetry::prometheus();
    handle.run_upkeep();
    (
        [("content-type", "text/plain; version=0.0.4")],
        handle.render(),
    )
}
