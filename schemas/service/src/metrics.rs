//! The process-wide Prometheus recorder every service renders at `/metrics`.
//!
//! One naming scheme for the whole project: `factline_<component>_<what>[_<unit>]`, where
//! the component is `write_side`, `read_api`, `projector` or `registry`, counters end in
//! `_total` and durations are histograms in seconds ending in `_seconds` (they share the
//! buckets below). Labels carry the rest (`projector`, `route`, `status`, …).

use std::sync::OnceLock;

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
