//! Rebuild progress: how far a building version is from the end of the log, recorded in
//! `factline_projector_rebuilds` (`events_done`, `events_total`, `eta_seconds`, `progress_at`)
//! about once a second and exported as metrics.
//!
//! `events_total` is the sum over partitions of (high watermark - low watermark) at the time,
//! `events_done` the sum of (stored next offset - low watermark), clamped to each partition's
//! range; the ETA comes from the rate between the first sample and the latest one.

use std::collections::HashMap;
use std::time::Instant;

use tokio_postgres::GenericClient;

use crate::positions::TopicPartition;

/// Progress at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Records applied (or skipped) so far.
    pub done: i64,
    /// Records in the log now.
    pub total: i64,
    /// Seconds left at the recent rate, when there is a rate.
    pub eta_seconds: Option<f64>,
}

/// Sums done and total over partitions: `ends` holds (low, high) watermarks, `stored` the next
/// offsets applied.
pub fn measure(
    ends: &HashMap<TopicPartition, (i64, i64)>,
    stored: &HashMap<TopicPartition, i64>,
) -> (i64, i64) {
    let mut done = 0;
    let mut total = 0;
    for (tp, (low, high)) in ends {
        let size = (high - low).max(0);
        total += size;
        let next = stored.get(tp).copied().unwrap_or(*low);
        done += (next - low).clamp(0, size);
    }
    (done, total)
}

/// Estimates the time left from successive samples.
#[derive(Debug, Default)]
pub struct Estimator {
    first: Option<(Instant, i64)>,
}

impl Estimator {
    /// Adds a sample taken at `now` and returns the progress with its ETA.
    pub fn sample(&mut self, now: Instant, done: i64, total: i64) -> Progress {
        let (t0, d0) = *self.first.get_or_insert((now, done));
        let left = (total - done).max(0);
        let elapsed = now.duration_since(t0).as_secs_f64();
        let eta_seconds = if left == 0 {
            Some(0.0)
        } else if elapsed > 0.0 && done > d0 {
            Some(left as f64 / ((done - d0) as f64 / elapsed))
        } else {
            None
        };
        Progress {
            done,
            total,
            eta_seconds,
        }
    }
}

/// Writes the progress of a projector version.
pub async fn record<C: GenericClient>(
    client: &C,
    projector: &str,
    version: u32,
    progress: &Progress,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE factline_projector_rebuilds SET events_done = $3, events_total = $4, \
             eta_seconds = $5, progress_at = now() WHERE projector = $1 AND version = $2",
            &[
                &projector,
                &(version as i32),
                &progress.done,
                &progress.total,
                &progress.eta_seconds,
            ],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn measures_against_low_watermarks_and_clamps() {
        let ends = HashMap::from([
            (("a".to_owned(), 0), (10, 110)),
            (("a".to_owned(), 1), (0, 50)),
            (("b".to_owned(), 0), (5, 5)),
        ]);
        let stored = HashMap::from([
            (("a".to_owned(), 0), 60),
            (("b".to_owned(), 0), 9), // beyond the end: clamped
        ]);
        assert_eq!(measure(&ends, &stored), (50, 150));
    }

    #[test]
    fn estimates_from_the_rate() {
        let mut e = Estimator::default();
        let t0 = Instant::now();
        assert_eq!(e.sample(t0, 0, 100).eta_seconds, None);
        let p = e.sample(t0 + Duration::from_secs(2), 20, 100);
        assert_eq!(p.eta_seconds, Some(8.0));
        assert_eq!(
            e.sample(t0 + Duration::from_secs(3), 100, 100).eta_seconds,
            Some(0.0)
        );
    }
}
