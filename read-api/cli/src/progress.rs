//! Progress of a long run that sends records (`replay`, `restore`): a bar with its rate and ETA
//! on a terminal (standard error), and with `--output json` one JSON line on standard error
//! at most once a second and at the end, `{"progress": {"done", "total", "per_second",
//! "eta_seconds"}}`, so a script can follow the run while standard output keeps its one
//! result document.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::output::{self, Format};

/// How often a JSON progress line is written at most.
const EVERY: Duration = Duration::from_secs(1);

/// The progress of `total` items.
pub struct Progress {
    bar: indicatif::ProgressBar,
    json: bool,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    /// Progress of `total` items called `what`, shown as `format` asks.
    pub fn new(total: u64, what: &str, format: Format) -> Progress {
        Progress {
            bar: output::bar(total, what),
            json: format == Format::Json,
            total,
            done: 0,
            started: Instant::now(),
            last_line: None,
        }
    }

    /// One more item done.
    pub fn inc(&mut self) {
        self.done += 1;
        self.bar.inc(1);
        if self.json && self.last_line.is_none_or(|at| at.elapsed() >= EVERY) {
            self.line();
        }
    }

    /// The end: the bar is cleared, a last JSON line written.
    pub fn finish(mut self) {
        self.bar.finish_and_clear();
        if self.json {
            self.line();
        }
    }

    fn line(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        let per_second = if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        };
        let left = self.total.saturating_sub(self.done) as f64;
        let eta = (per_second > 0.0).then(|| (left / per_second * 10.0).round() / 10.0);
        eprintln!(
            "{}",
            json!({"progress": {
                "done": self.done, "total": self.total,
                "per_second": (per_second * 10.0).round() / 10.0, "eta_seconds": eta,
            }})
        );
        self.last_line = Some(Instant::now());
    }
}
