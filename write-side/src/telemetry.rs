//! The write side's metrics: their names and descriptions, on the process-wide recorder of
//! `factline-service`.

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

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

/// The handles of the per-request metrics, by command and status, so answering a command does
/// not build label strings and look the series up in the registry each time. Bounded: commands
/// outside the catalog are counted as `unknown`, and statuses are the API's own.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    by_command: Mutex<HashMap<String, HashMap<u16, Handles>>>,
}

/// One command and status's series: answers counted, and their durations.
type Handles = (Counter, Histogram);

impl RequestMetrics {
    /// Counts one answered command (`command` as labelled: a catalog name or `unknown`).
    pub fn record(&self, command: &str, status: u16, elapsed: Duration) {
        let (counter, histogram) = {
            let mut by_command = self
                .by_command
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !by_command.contains_key(command) {
                by_command.insert(command.to_string(), HashMap::new());
            }
            let Some(by_status) = by_command.get_mut(command) else {
                return;
            };
            by_status
                .entry(status)
                .or_insert_with(|| {
                    (
                        metrics::counter!("factline_write_side_requests_total",
                            "command" => command.to_string(), "status" => status.to_string()),
                        metrics::histogram!("factline_write_side_request_duration_seconds",
                            "command" => command.to_string()),
                    )
                })
                .clone()
        };
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
}
