//! Metrics of a projector, every one labelled `projector` (the projector name) and `version`,
//! and the process-wide Prometheus recorder they are rendered from.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

/// Events applied to the read model (rate = events/s).
pub const EVENTS_APPLIED: &str = "factline_projector_events_applied_total";
/// Events skipped because their `event_id` was already applied.
pub const EVENTS_DUPLICATE: &str = "factline_projector_events_duplicate_total";
/// Events of types the projection does not consume, by `event_type`.
pub const EVENTS_IGNORED: &str = "factline_projector_events_ignored_total";
/// Records sent to a dead-letter topic.
pub const DEAD_LETTERED: &str = "factline_projector_dead_lettered_total";
/// Seconds to apply and commit one batch.
pub const BATCH_SECONDS: &str = "factline_projector_batch_seconds";
/// Retries after transient failures, by `stage` (decode, sink, dead_letter, bootstrap).
pub const RETRIES: &str = "factline_projector_retries_total";
/// Times the consumer paused its partitions for having nothing to read (see
/// `runtime::idle`).
pub const IDLE_PAUSES: &str = "factline_projector_idle_pauses_total";
/// Times the consumer paused its partitions for one pace, every one read to its end while
/// records flow (see `runtime::idle`).
pub const FETCH_PACES: &str = "factline_projector_fetch_paces_total";
/// Records between the checkpoint and the high watermark, per `topic` and `partition`.
pub const LAG_EVENTS: &str = "factline_projector_lag_events";
/// Age of the last applied event when records are still waiting, per `topic` and `partition`.
pub const LAG_SECONDS: &str = "factline_projector_lag_seconds";
/// 1 while this version is building behind an older live one, 0 once live.
pub const REBUILDING: &str = "factline_projector_rebuilding";
/// Records of the log applied by a building version so far.
pub const REBUILD_EVENTS_DONE: &str = "factline_projector_rebuild_events_done";
/// Records in the log a building version has to reach.
pub const REBUILD_EVENTS_TOTAL: &str = "factline_projector_rebuild_events_total";
/// Estimated seconds until a building version catches up (absent until there is a rate).
pub const REBUILD_ETA_SECONDS: &str = "factline_projector_rebuild_eta_seconds";

/// The process-wide recorder (installed on first use), shared with every factline service.
pub fn prometheus() -> &'static PrometheusHandle {
    factline_service::metrics::prometheus()
}

/// The metrics handle of one projector.
#[derive(Debug, Clone)]
pub struct Metrics {
    projector: String,
    version: String,
}

impl Metrics {
    /// Metrics labelled with this projector's name and version.
    pub fn new(projector: &str, version: u32) -> Metrics {
        prometheus();
        Metrics {
            projector: projector.to_owned(),
            version: version.to_string(),
        }
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("projector", self.projector.clone()),
            ("version", self.version.clone()),
        ]
    }

    /// Counts a committed batch.
    pub fn batch(&self, applied: u64, duplicates: u64, dead_lettered: u64, took: Duration) {
        counter!(EVENTS_APPLIED, &self.labels()).increment(applied);
        counter!(EVENTS_DUPLICATE, &self.labels()).increment(duplicates);
        counter!(DEAD_LETTERED, &self.labels()).increment(dead_lettered);
        histogram!(BATCH_SECONDS, &self.labels()).record(took.as_secs_f64());
    }

    /// Counts records of an event type the projection does not consume.
    pub fn ignored(&self, event_type: &str, count: u64) {
        let [a, b] = self.labels();
        counter!(
            EVENTS_IGNORED,
            &[a, b, ("event_type", event_type.to_owned())]
        )
        .increment(count);
    }

    /// Counts a retry.
    pub fn retry(&self, stage: &'static str) {
        let [a, b] = self.labels();
        counter!(RETRIES, &[a, b, ("stage", stage.to_owned())]).increment(1);
    }

    /// Counts a pause of an idle consumer.
    pub fn idle_pause(&self) {
        counter!(IDLE_PAUSES, &self.labels()).increment(1);
    }

    /// Counts a pace of a consumer that read every partition to its end.
    pub fn fetch_pace(&self) {
        counter!(FETCH_PACES, &self.labels()).increment(1);
    }

    /// Sets the lag of one partition.
    pub fn lag(&self, topic: &str, partition: i32, events: i64, seconds: f64) {
        let [a, b] = self.labels();
        let labels = [
            a,
            b,
            ("topic", topic.to_owned()),
            ("partition", partition.to_string()),
        ];
        gauge!(LAG_EVENTS, &labels).set(events as f64);
        gauge!(LAG_SECONDS, &labels).set(seconds);
    }

    /// Sets the rebuild progress.
    pub fn rebuild_progress(&self, progress: &crate::progress::Progress) {
        gauge!(REBUILD_EVENTS_DONE, &self.labels()).set(progress.done as f64);
        gauge!(REBUILD_EVENTS_TOTAL, &self.labels()).set(progress.total as f64);
        if let Some(eta) = progress.eta_seconds {
            gauge!(REBUILD_ETA_SECONDS, &self.labels()).set(eta);
        }
    }

    /// Sets whether this version is rebuilding.
    pub fn rebuilding(&self, rebuilding: bool) {
        gauge!(REBUILDING, &self.labels()).set(if rebuilding { 1.0 } else { 0.0 });
    }
}
