//! Logs and metrics: the tracing subscriber (JSON when `LOG_FORMAT=json`, filter from
//! `RUST_LOG`), the process-wide Prometheus recorder, and the names of the write side's metrics.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets (seconds) of the request histograms.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process-wide Prometheus recorder's handle, installed on first use. When another recorder
/// is already installed, a detached handle renders this crate's view as empty.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                Err(error) => {
                    tracing::warn!(%error, "a metrics recorder is already installed");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "write_side_requests_total",
        "commands answered, by command and HTTP status"
    );
    metrics::describe_histogram!(
        "write_side_request_duration_seconds",
        metrics::Unit::Seconds,
        "time from receiving a command to answering it, by command"
    );
    metrics::describe_counter!(
        "write_side_produce_errors_total",
        "records the broker did not acknowledge, by kind (not_written, unknown)"
    );
    metrics::describe_gauge!(
        "write_side_in_flight_records",
        "records produced and not yet acknowledged"
    );
    metrics::describe_gauge!(
        "write_side_in_flight_bytes",
        metrics::Unit::Bytes,
        "bytes produced and not yet acknowledged"
    );
    metrics::describe_counter!(
        "write_side_budget_exhausted_total",
        "requests refused because the in-flight budget was used up"
    );
    metrics::describe_gauge!(
        "write_side_brokers_down",
        "1 while every kafka broker is unreachable"
    );
    metrics::describe_counter!(
        "write_side_idempotent_replays_total",
        "requests answered from the idempotency store"
    );
}

/// Installs the global tracing subscriber: JSON lines when `log_format` is `json`, text
/// otherwise; the filter comes from `RUST_LOG` (default `info`).
pub fn init_tracing(log_format: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if log_format.is_some_and(|f| f.eq_ignore_ascii_case("json")) {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    // Already initialised (a second app in the same process, e.g. in tests): keep the first.
    drop(result);
}
