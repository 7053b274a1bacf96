//! The process-wide Prometheus recorder every service renders at `/metrics`.
//!
//! One naming scheme for the whole project: `factline_<component>_<what>[_<unit>]`, where
//! the component is `write_side`, `read_api`, `projector` or `registry`, counters end in
//! `_total` and durations are histograms in seconds ending in `_seconds` (they share the
//! buckets below). Labels carry the rest (`projector`, `route`, `status`, …).
//!
//! [`record_requests`] is the HTTP middleware counting and timing requests by matched route
//! and status, the same way in every service that uses it.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) of every `*_seconds` metric: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The recorder's handle, installed on first use. If another recorder is already installed
/// (only possible in tests that combine libraries), a detached handle is returned and a
/// warning logged: `/metrics` then renders nothing rather than failing.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "a metrics recorder is already installed; /metrics may be empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// The names of one service's request metrics: `factline_<component>_requests_total` (by
/// `route` and `status`) and `factline_<component>_request_duration_seconds` (by `route`).
#[derive(Debug, Clone, Copy)]
pub struct RequestMetrics {
    /// The counter's name.
    pub requests: &'static str,
    /// The histogram's name.
    pub duration: &'static str,
}

/// The read API's request metrics.
pub const READ_API_REQUESTS: RequestMetrics = RequestMetrics {
    requests: "factline_read_api_requests_total",
    duration: "factline_read_api_request_duration_seconds",
};

/// The registry's request metrics.
pub const REGISTRY_REQUESTS: RequestMetrics = RequestMetrics {
    requests: "factline_registry_requests_total",
    duration: "factline_registry_request_duration_seconds",
};

/// Counts and times every request by matched route (`unmatched` for none) and status; use
/// with `axum::middleware::from_fn_with_state(NAMES, record_requests)`.
pub async fn record_requests(
    State(names): State<RequestMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names.requests, "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!(names.duration, "route" => route).record(started.elapsed().as_secs_f64());
    response
}
