//! The read API's metrics: the process-wide recorder of `factline-service`, and its request
//! metrics (`factline_read_api_requests_total`, `factline_read_api_request_duration_seconds`,
//! recorded by the service crate's middleware), and a span per request when traces are on.

use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide Prometheus recorder's handle (shared with every factline service).
pub fn metrics_handle() -> PrometheusHandle {
    factline_service::metrics::prometheus().clone()
}

/// When traces are exported: one span per request (`factline.query`, by route), a child of
/// the request's `traceparent` when it carries one (a client reading its own write).
pub async fn trace(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !factline_service::traces::enabled() {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!("factline.query", otel.kind = "server", http.route = %route);
    if let Some(traceparent) = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        factline_service::traces::set_parent(&span, traceparent);
    }
    tracing::Instrument::instrument(next.run(request), span).await
}
