//! The write side's metrics: their names and descriptions, on the process-wide recorder of
//! `factline-service`.

use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide Prometheus recorder's handle (shared with every factline service), with
/// the write side's metrics described.
pub fn metrics_handle() -> PrometheusHandle {
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    let handle = factline_service::metrics::prometheus().clone();
    DESCRIBED.call_once(describe);
    handle
}

fn describe() {
    metrics::describe_counter!(
        "factline_write_side_requests_total",
        "commands answered, by command and HTTP status"
    );
    metrics::describe_histogram!(
        "factline_write_side_request_duration_seconds",
        metrics::Unit::Seconds,
        "time from receiving a command to answering it, by command"
    );
    metrics::describe_counter!(
        "factline_write_side_produce_errors_total",
        "records the broker did not acknowledge, by kind (not_written, unknown)"
    );
    metrics::describe_gauge!(
        "factline_write_side_in_flight_records",
        "records produced and not yet acknowledged"
    );
    metrics::describe_gauge!(
        "factline_write_side_in_flight_bytes",
        metrics::Unit::Bytes,
        "bytes produced and not yet acknowledged"
    );
    metrics::describe_counter!(
        "factline_write_side_budget_exhausted_total",
        "requests refused because the in-flight budget was used up"
    );
    metrics::describe_gauge!(
        "factline_write_side_brokers_down",
        "1 while every kafka broker is unreachable"
    );
    metrics::describe_counter!(
        "factline_write_side_idempotent_replays_total",
        "requests answered from the idempotency store"
    );
}
