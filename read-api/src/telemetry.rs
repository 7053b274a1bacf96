//! The read API's metrics: the process-wide recorder of `factline-service`, and its request
//! metrics (`factline_read_api_requests_total`, `factline_read_api_request_duration_seconds`,
//! recorded by the service crate's middleware).

use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide Prometheus recorder's handle (shared with every factline service).
pub fn metrics_handle() -> PrometheusHandle {
    factline_service::metrics::prometheus().clone()
}
