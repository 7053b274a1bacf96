//! The bench's results: one row per measurement, the targets of issue #8 judged against them,
//! peak memory per service; printed as one table and written as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Whether a measurement ran.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Measured.
    Ok,
    /// Not run (a service is not built yet, …).
    Skipped,
    /// Ran and failed.
    Failed,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Stage (`limits`, `write side`, `projectors`, `read api`, `end to end`).
    pub stage: String,
    /// Stable key (`limit.kafka_produce`, `write.single`, …).
    pub key: String,
    /// Human label.
    pub label: String,
    /// Whether it ran.
    pub state: State,
    /// Why it was skipped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unit of `rate` (`events/s`, `commands/s`, `requests/s`, `rows/s`, `docs/s`).
    pub unit: String,
    /// Throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Items measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Seconds measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Latency p50, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// Latency p99, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// Latency p99.9, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p999_ms: Option<f64>,
    /// Throughput as a fraction of its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Which limit `ratio` divides by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to: Option<String>,
    /// Failed requests by cause.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<String, u64>,
    /// Cores used per process during the measurement (1.0 = one core).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cpu_cores: BTreeMap<String, f64>,
    /// Anything else worth knowing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Row {
    /// A measured row.
    pub fn ok(stage: &str, key: &str, label: &str, unit: &str, rate: f64) -> Row {
        Row {
            stage: stage.into(),
            key: key.into(),
            label: label.into(),
            state: State::Ok,
            reason: None,
            unit: unit.into(),
            rate: Some(rate),
            count: None,
            seconds: None,
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            ratio: None,
            ratio_to: None,
            failures: BTreeMap::new(),
            cpu_cores: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// A row that did not run.
    pub fn not_run(stage: &str, key: &str, label: &str, state: State, reason: String) -> Row {
        Row {
            state,
            reason: Some(reason),
            rate: None,
            ..Row::ok(stage, key, label, "", 0.0)
        }
    }

    /// Sets count and seconds.
    pub fn measured(mut self, count: u64, seconds: f64) -> Row {
        self.count = Some(count);
        self.seconds = Some((seconds * 1000.0).round() / 1000.0);
        self
    }

    /// Sets latencies.
    pub fn latency(mut self, p50: f64, p99: f64, p999: f64) -> Row {
        self.p50_ms = Some(p50);
        self.p99_ms = Some(p99);
        self.p999_ms = Some(p999);
        self
    }

    /// Sets the ratio to a limit.
    pub fn ratio(mut self, limit: Option<(&str, f64)>) -> Row {
        self.set_ratio(limit);
        self
    }

    /// Sets the ratio to a limit measured after the row.
    pub fn set_ratio(&mut self, limit: Option<(&str, f64)>) {
        if let (Some(rate), Some((name, limit))) = (self.rate, limit) {
            if limit > 0.0 {
                self.ratio = Some(((rate / limit) * 1000.0).round() / 1000.0);
                self.ratio_to = Some(name.to_owned());
            }
        }
    }

    /// Sets the cores each process used during the measurement.
    pub fn cpu(mut self, cores: BTreeMap<String, f64>) -> Row {
        self.cpu_cores = cores;
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.notes.push(note.into());
        self
    }
}

/// A target of issue #8.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is aimed for.
    pub goal: String,
    /// What was measured.
    pub measured: String,
    /// `reached`, `not reached` or `skipped`.
    pub verdict: String,
    /// Where the time goes, when not reached.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<String>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When it ran (RFC 3339).
    pub started_at: String,
    /// Quick mode (tiny sizes, for CI).
    pub quick: bool,
    /// Build profile of the services.
    pub profile: String,
    /// Sizes and settings used.
    pub settings: serde_json::Value,
    /// Every measurement.
    pub rows: Vec<Row>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Peak resident memory per service, MiB.
    pub peak_memory_mib: BTreeMap<String, f64>,
    /// Total wall time, seconds.
    pub total_seconds: f64,
}

impl Report {
    /// The row with `key`, if it was measured.
    pub fn measured(&self, key: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.key == key && r.state == State::Ok)
    }

    /// The rate of the row with `key`, if it was measured.
    pub fn rate(&self, key: &str) -> Option<f64> {
        self.measured(key).and_then(|r| r.rate)
    }

    /// Whether any row failed.
    pub fn any_failed(&self) -> bool {
        self.rows.iter().any(|r| r.state == State::Failed)
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "factline bench ({}, services built {}) — {}",
            if self.quick {
                "QUICK: tiny sizes, figures not meaningful"
            } else {
                "full"
            },
            self.profile,
            self.started_at
        );
        let _ = writeln!(
            out,
            "{:<12} {:<44} {:>14} {:>9} {:>9} {:>9} {:>8}  cpu cores / notes",
            "stage", "measurement", "throughput", "p50 ms", "p99 ms", "p99.9 ms", "ratio"
        );
        let _ = writeln!(out, "{}", "-".repeat(140));
        for row in &self.rows {
            let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            match row.state {
                State::Ok => {
                    let rate = row
                        .rate
                        .map_or("-".to_owned(), |r| match row.unit.as_str() {
                            "cores" => format!("{r:.2} cores"),
                            unit => format!("{} {}", human(r), short_unit(unit)),
                        });
                    let ratio = row
                        .ratio
                        .map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0));
                    let cpu: Vec<String> = row
                        .cpu_cores
                        .iter()
                        .filter(|(_, c)| **c >= 0.05)
                        .map(|(n, c)| format!("{n} {c:.2}"))
                        .collect();
                    let mut extra = cpu.join(", ");
                    if !row.failures.is_empty() {
                        let failures: Vec<String> = row
                            .failures
                            .iter()
                            .map(|(k, v)| format!("{k}: {v}"))
                            .collect();
                        extra.push_str(&format!(" | failures {}", failures.join(", ")));
                    }
                    let _ = writeln!(
                        out,
                        "{:<12} {:<44} {:>14} {:>9} {:>9} {:>9} {:>8}  {}",
                        row.stage,
                        row.label,
                        rate,
                        f(row.p50_ms),
                        f(row.p99_ms),
                        f(row.p999_ms),
                        ratio,
                        extra
                    );
                    for note in &row.notes {
                        let _ = writeln!(out, "{:<12} {:<44} {}", "", "", note);
                    }
                }
                _ => {
                    let what = if row.state == State::Skipped {
                        "skipped"
                    } else {
                        "FAILED"
                    };
                    let _ = writeln!(
                        out,
                        "{:<12} {:<44} {what}: {}",
                        row.stage,
                        row.label,
                        row.reason
                            .as_deref()
                            .unwrap_or("")
                            .lines()
                            .next()
                            .unwrap_or("")
                    );
                }
            }
        }
        let _ = writeln!(out, "\ntargets (2-core machine)");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "  [{:<11}] {:<58} measured: {}",
                t.verdict, t.goal, t.measured
            );
            if let Some(b) = &t.bottleneck {
                let _ = writeln!(out, "  {:<13} bottleneck: {b}", "");
            }
        }
        if !self.peak_memory_mib.is_empty() {
            let mem: Vec<String> = self
                .peak_memory_mib
                .iter()
                .map(|(k, v)| format!("{k} {v:.0} MiB"))
                .collect();
            let _ = writeln!(out, "\npeak memory (VmHWM): {}", mem.join(", "));
        }
        let _ = writeln!(out, "total {:.0} s", self.total_seconds);
        out
    }
}

fn short_unit(unit: &str) -> &str {
    unit.split('/').next().map_or(unit, |u| match u {
        "events" => "ev/s",
        "commands" => "cmd/s",
        "requests" => "req/s",
        "rows" => "rows/s",
        "docs" => "docs/s",
        "records" => "rec/s",
        _ => unit,
    })
}

/// `12345.6` -> `12.3k`.
pub fn human(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}M", v / 1_000_000.0)
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_table() {
        let row = Row::ok("limits", "a", "A", "events/s", 50.0).ratio(Some(("b", 200.0)));
        assert_eq!(row.ratio, Some(0.25));
        let report = Report {
            started_at: "now".into(),
            quick: true,
            profile: "debug".into(),
            settings: serde_json::json!({}),
            rows: vec![
                row,
                Row::not_run("read", "r", "R", State::Skipped, "not built".into()),
            ],
            targets: vec![],
            peak_memory_mib: BTreeMap::new(),
            total_seconds: 1.0,
        };
        let table = report.table();
        assert!(table.contains("25%"));
        assert!(table.contains("skipped: not built"));
        assert_eq!(human(12_345.0), "12.3k");
    }
}
