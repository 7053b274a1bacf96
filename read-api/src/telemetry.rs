//! Request metrics: the middleware counting requests by route and status and timing them,
//! rendered by the process-wide recorder of `factline-service`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide Prometheus recorder's handle (shared with every factline service).
pub fn metrics_handle() -> PrometheusHandle {
    factline_service::metrics::prometheus().clone()
}

/// Counts and times every request by matched route and status.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("factline_read_api_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("factline_read_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
