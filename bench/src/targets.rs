//! The targets of the performance issues (#8, then #19) as a table: each target names the row it is judged on, the
//! thresholds that row must meet (all of them, or any one), and how its measurement is written.
//! Judging is pure: the run's rows in, one verdict per target out, with where the CPU went when
//! a target is not reached.

use crate::report::{human, Row, State, Target};
use Combine::{AllOf, AnyOf};
use Shown::{Cores, CpuPerItem, Latency, RateAndLimit, RateAndP99, RateAndRatio};
use Threshold::{CpuPerItemAtMostUs, P99BelowMs, RateAtLeast, RateAtMost, RatioAtLeast};

/// One threshold a measured row is held to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Throughput at least this, in the row's unit.
    RateAtLeast(f64),
    /// The measured value at most this, in the row's unit (the cores of the stack at rest).
    RateAtMost(f64),
    /// Throughput at least this fraction of the row's limit; not met when no limit was measured.
    RatioAtLeast(f64),
    /// p99 latency below this many milliseconds; not met when no latency was measured.
    P99BelowMs(f64),
    /// The CPU the named process spent per item at most this many microseconds (its cores
    /// during the measurement over the throughput); not met when the process was not watched.
    CpuPerItemAtMostUs(&'static str, f64),
}

impl Threshold {
    /// Whether `row` meets it.
    pub fn met_by(self, row: &Row) -> bool {
        match self {
            Threshold::RateAtLeast(rate) => row.rate.unwrap_or_default() >= rate,
            Threshold::RateAtMost(most) => row.rate.is_some_and(|r| r <= most),
            Threshold::RatioAtLeast(ratio) => row.ratio.is_some_and(|r| r >= ratio),
            Threshold::P99BelowMs(ms) => row.p99_ms.unwrap_or(f64::MAX) < ms,
            Threshold::CpuPerItemAtMostUs(process, us) => {
                cpu_per_item_us(row, process).is_some_and(|measured| measured <= us)
            }
        }
    }
}

/// Microseconds of `process`'s CPU per item of `row`, when both were measured.
fn cpu_per_item_us(row: &Row, process: &str) -> Option<f64> {
    let cores = row.cpu_cores.get(process)?;
    let rate = row.rate.filter(|r| *r > 0.0)?;
    Some(cores / rate * 1e6)
}

/// How a target's thresholds combine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Combine {
    /// Every threshold must be met.
    AllOf,
    /// One threshold met is enough.
    AnyOf,
}

/// How a target writes what was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shown {
    /// Throughput and its ratio to the limit: `12.3k cmd/s, 45%`.
    RateAndRatio(&'static str),
    /// Throughput and p99: `12.3k req/s, p99 4.2 ms`.
    RateAndP99(&'static str),
    /// Throughput, its ratio and the limit's name: `12.3k ev/s, 45% of kafka consume`.
    RateAndLimit(&'static str),
    /// Latencies only: `p50 22 ms, p99 185 ms`.
    Latency,
    /// Cores: `0.26 cores`.
    Cores,
    /// CPU of a process per item and the throughput: `37.1 µs of write-side CPU per item at
    /// 26.9k cmd/s`.
    CpuPerItem(&'static str, &'static str),
}

/// One target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetSpec {
    /// What is aimed for, as printed.
    pub goal: &'static str,
    /// The key of the row it is judged on.
    pub key: &'static str,
    /// How `thresholds` combine.
    pub combine: Combine,
    /// What the row must meet.
    pub thresholds: &'static [Threshold],
    /// How the measurement is written.
    pub shown: Shown,
    /// Written instead of the row's state when quick mode does not measure the row.
    pub not_in_quick: Option<&'static str>,
}

/// The targets, in the order they are printed: goal, key of the row judged, how the thresholds
/// combine, the thresholds, how the measurement is written.
#[rustfmt::skip]
pub const TARGETS: &[TargetSpec] = &[
    TargetSpec::new("the whole stack at rest < 0.3 cores", "idle.stack", AllOf, &[RateAtMost(0.3)], Cores),
    TargetSpec::new("batch endpoint >= 100k commands/s or >= 80% of raw producer", "write.batch", AnyOf, &[RateAtLeast(100_000.0), RatioAtLeast(0.8)], RateAndRatio("cmd/s")),
    TargetSpec::new("batch endpoint <= 20 us of write-side CPU per command", "write.batch", AllOf, &[CpuPerItemAtMostUs("write-side", 20.0)], CpuPerItem("write-side", "cmd/s")),
    TargetSpec::new("encrypting personal data keeps >= 90% of the batch rate without it", "write.encryption", AllOf, &[RatioAtLeast(0.9)], RateAndLimit("cmd/s")),
    TargetSpec::new("single-command >= 20k commands/s with p99 < 25 ms", "write.single", AllOf, &[RateAtLeast(20_000.0), P99BelowMs(25.0)], RateAndP99("cmd/s")),
    TargetSpec::new("single-command p99 < 25 ms at 10k commands/s offered", "write.single_offered", AllOf, &[RateAtLeast(9_500.0), P99BelowMs(25.0)], RateAndP99("cmd/s"))
        .not_in_quick("quick mode offers another rate"),
    TargetSpec::new("PG projector >= 50k events/s and >= 70% of its limit", "projector.order_summary", AllOf, &[RateAtLeast(50_000.0), RatioAtLeast(0.7)], RateAndLimit("ev/s")),
    TargetSpec::new("PG projector on encrypted personal data >= 90% of it in clear", "projector.order_summary_sealed", AllOf, &[RatioAtLeast(0.9)], RateAndLimit("ev/s")),
    TargetSpec::new("ES projector (order_search) >= 60% of its limit", "projector.order_search", AllOf, &[RatioAtLeast(0.6)], RateAndLimit("ev/s")),
    TargetSpec::new("ES projector (event_index) >= 60% of its limit", "projector.event_index", AllOf, &[RatioAtLeast(0.6)], RateAndLimit("ev/s")),
    TargetSpec::new("archiver >= 70% of the raw consumer on the same backlog", "archive.archiver", AllOf, &[RatioAtLeast(0.7)], RateAndLimit("rec/s")),
    TargetSpec::new("replay to a topic >= 50% of the raw producer", "archive.replay", AllOf, &[RatioAtLeast(0.5)], RateAndLimit("rec/s")),
    TargetSpec::new("read by id >= 15k requests/s with p99 < 10 ms", "read.by_id", AllOf, &[RateAtLeast(15_000.0), P99BelowMs(10.0)], RateAndP99("req/s")),
    TargetSpec::new("end-to-end p99 < 150 ms at 1k commands/s", "e2e.1000", AllOf, &[P99BelowMs(150.0)], Latency)
        .not_in_quick("quick mode offers other rates"),
];

/// Every target of [`TARGETS`] judged against the run's rows.
pub fn judge(rows: &[Row], quick: bool) -> Vec<Target> {
    TARGETS.iter().map(|t| t.judge(rows, quick)).collect()
}

impl TargetSpec {
    /// A target judged on the row with `key`, skipped when quick mode leaves the row out.
    pub const fn new(
        goal: &'static str,
        key: &'static str,
        combine: Combine,
        thresholds: &'static [Threshold],
        shown: Shown,
    ) -> TargetSpec {
        TargetSpec {
            goal,
            key,
            combine,
            thresholds,
            shown,
            not_in_quick: None,
        }
    }

    /// The same target, written as `why` instead of skipped when quick mode leaves its row out.
    pub const fn not_in_quick(self, why: &'static str) -> TargetSpec {
        TargetSpec {
            not_in_quick: Some(why),
            ..self
        }
    }

    /// The verdict on the row with this target's key: reached or not when it was measured,
    /// skipped (with the row's state and reason) when it was not.
    pub fn judge(&self, rows: &[Row], quick: bool) -> Target {
        let row = rows.iter().find(|r| r.key == self.key);
        let Some(row) = row.filter(|r| r.state == State::Ok) else {
            let measured = match (self.not_in_quick, row) {
                (Some(why), _) if quick => why.to_owned(),
                (_, Some(r)) => not_measured(r),
                (_, None) => "not run".to_owned(),
            };
            return Target {
                goal: self.goal.to_owned(),
                measured,
                verdict: "skipped".to_owned(),
                bottleneck: None,
            };
        };
        let mut met = self.thresholds.iter().map(|t| t.met_by(row));
        let reached = match self.combine {
            Combine::AllOf => met.all(|m| m),
            Combine::AnyOf => met.any(|m| m),
        };
        Target {
            goal: self.goal.to_owned(),
            measured: self.shown.write(row),
            verdict: verdict(reached),
            bottleneck: (!reached).then(|| busiest(row)).flatten(),
        }
    }
}

impl Shown {
    /// What `row` measured, as this target writes it.
    fn write(self, row: &Row) -> String {
        let rate = human(row.rate.unwrap_or_default());
        let p99 = row.p99_ms.unwrap_or(f64::MAX);
        match self {
            Shown::RateAndRatio(unit) => format!("{rate} {unit}, {}", pct(row.ratio)),
            Shown::RateAndP99(unit) => format!("{rate} {unit}, p99 {p99:.1} ms"),
            Shown::RateAndLimit(unit) => format!(
                "{rate} {unit}, {} of {}",
                pct(row.ratio),
                row.ratio_to.clone().unwrap_or_default()
            ),
            Shown::Cores => format!("{:.2} cores", row.rate.unwrap_or_default()),
            Shown::CpuPerItem(process, unit) => match cpu_per_item_us(row, process) {
                Some(us) => format!("{us:.1} us of {process} CPU per item at {rate} {unit}"),
                None => format!("{process} CPU not measured ({rate} {unit})"),
            },
            Shown::Latency => format!(
                "p50 {:.0} ms, p99 {p99:.0} ms",
                row.p50_ms.unwrap_or_default()
            ),
        }
    }
}

/// A row that was skipped or failed, as a target shows it: its state and the first line of
/// its reason, lowercase.
fn not_measured(row: &Row) -> String {
    format!(
        "{:?}: {}",
        row.state,
        row.reason
            .as_deref()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
    )
    .to_lowercase()
}

/// `reached` or `not reached`.
pub fn verdict(reached: bool) -> String {
    if reached { "reached" } else { "not reached" }.to_owned()
}

/// `45%`, or `no limit measured`.
fn pct(ratio: Option<f64>) -> String {
    ratio.map_or("no limit measured".into(), |r| format!("{:.0}%", r * 100.0))
}

/// Where the cores went during a row's measurement: whether the machine was CPU-bound, one
/// process saturated a core, or the stage was waiting; the three busiest processes; and a note
/// when processes outside the run took a share. `None` when no process was watched.
pub fn busiest(row: &Row) -> Option<String> {
    let mut cpu: Vec<(&String, &f64)> = row.cpu_cores.iter().collect();
    cpu.sort_by(|a, b| b.1.total_cmp(a.1));
    let total: f64 = row.cpu_cores.values().sum();
    cpu.retain(|(n, _)| n.as_str() != "other");
    let other = row.cpu_cores.get("other").copied().unwrap_or(0.0);
    let top: Vec<String> = cpu
        .iter()
        .take(3)
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect();
    if top.is_empty() {
        return None;
    }
    let kind = if total >= 1.7 {
        "CPU-bound (both cores busy)".to_owned()
    } else if cpu.first().is_some_and(|(_, c)| **c >= 0.9) {
        format!("one process saturates a core ({})", cpu[0].0)
    } else {
        "not CPU-bound: waiting (round trips, batching linger, fsync, or too few requests in flight)"
            .to_owned()
    };
    let shared = if other >= 0.3 {
        format!("; NOTE {other:.2} cores used by other processes on the machine meanwhile")
    } else {
        String::new()
    };
    Some(format!(
        "{kind}; cpu cores used: {} (machine total {total:.2} of 2){shared}",
        top.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn cores(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    fn measured(key: &str, rate: f64) -> Row {
        Row::ok("stage", key, "label", "events/s", rate)
    }

    /// The target whose goal starts with `goal_start`, judged on `rows`: (verdict, measured,
    /// bottleneck).
    fn judged(rows: &[Row], quick: bool, goal_start: &str) -> (String, String, Option<String>) {
        let t = judge(rows, quick)
            .into_iter()
            .find(|t| t.goal.starts_with(goal_start))
            .unwrap_or_else(|| panic!("no target starting with {goal_start:?}"));
        (t.verdict, t.measured, t.bottleneck)
    }

    fn owned(verdict: &str, measured: &str) -> (String, String, Option<String>) {
        (verdict.to_owned(), measured.to_owned(), None)
    }

    #[test]
    fn every_target_is_judged_in_order_with_its_goal() {
        let goals: Vec<String> = judge(&[], false).into_iter().map(|t| t.goal).collect();
        assert_eq!(
            goals,
            [
                "the whole stack at rest < 0.3 cores",
                "batch endpoint >= 100k commands/s or >= 80% of raw producer",
                "batch endpoint <= 20 us of write-side CPU per command",
                "encrypting personal data keeps >= 90% of the batch rate without it",
                "single-command >= 20k commands/s with p99 < 25 ms",
                "single-command p99 < 25 ms at 10k commands/s offered",
                "PG projector >= 50k events/s and >= 70% of its limit",
                "PG projector on encrypted personal data >= 90% of it in clear",
                "ES projector (order_search) >= 60% of its limit",
                "ES projector (event_index) >= 60% of its limit",
                "archiver >= 70% of the raw consumer on the same backlog",
                "replay to a topic >= 50% of the raw producer",
                "read by id >= 15k requests/s with p99 < 10 ms",
                "end-to-end p99 < 150 ms at 1k commands/s",
            ]
        );
    }

    #[test]
    fn the_stack_at_rest_is_judged_on_at_most_its_cores() {
        let quiet = Row::ok("at rest", "idle.stack", "l", "cores", 0.26);
        assert_eq!(
            judged(&[quiet], false, "the whole stack at rest"),
            owned("reached", "0.26 cores")
        );
        let busy = Row::ok("at rest", "idle.stack", "l", "cores", 2.01);
        let (verdict, measured, _) = judged(&[busy], false, "the whole stack at rest");
        assert_eq!(
            (verdict.as_str(), measured.as_str()),
            ("not reached", "2.01 cores")
        );
    }

    #[test]
    fn a_row_meeting_every_threshold_is_reached_without_a_bottleneck() {
        let mut row = measured("write.single", 25_000.0).latency(2.0, 12.5, 30.0);
        row.cpu_cores = cores(&[("write-side", 1.0)]);
        assert_eq!(
            judged(&[row], false, "single-command"),
            owned("reached", "25.0k cmd/s, p99 12.5 ms")
        );
    }

    #[test]
    fn single_commands_offered_are_judged_on_p99_at_the_offered_rate() {
        let goal = "single-command p99 < 25 ms at 10k";
        let row =
            |rate: f64, p99: f64| measured("write.single_offered", rate).latency(3.0, p99, 40.0);
        assert_eq!(
            judged(&[row(9_990.0, 18.4)], false, goal),
            owned("reached", "9990 cmd/s, p99 18.4 ms")
        );
        assert_eq!(judged(&[row(9_990.0, 31.0)], false, goal).0, "not reached");
        // a lower offered rate proves nothing about 10k
        assert_eq!(judged(&[row(2_000.0, 4.0)], false, goal).0, "not reached");
        assert_eq!(
            judged(&[], true, goal),
            owned("skipped", "quick mode offers another rate")
        );
    }

    #[test]
    fn a_row_missing_one_threshold_is_not_reached_and_names_the_busiest_processes() {
        let mut row = measured("read.by_id", 20_000.0).latency(3.0, 14.0, 20.0);
        row.cpu_cores = cores(&[("read-api", 0.95), ("postgres", 0.8), ("bench", 0.1)]);
        let (verdict, measured, bottleneck) = judged(&[row], false, "read by id");
        assert_eq!(
            (verdict.as_str(), measured.as_str()),
            ("not reached", "20.0k req/s, p99 14.0 ms")
        );
        assert_eq!(
            bottleneck.as_deref(),
            Some(
                "CPU-bound (both cores busy); cpu cores used: read-api 0.95, postgres 0.80, \
                 bench 0.10 (machine total 1.85 of 2)"
            )
        );
    }

    #[test]
    fn any_of_is_reached_by_one_threshold() {
        let row = measured("write.batch", 30_000.0).ratio(Some(("kafka produce", 35_000.0)));
        assert_eq!(
            judged(&[row], false, "batch endpoint"),
            owned("reached", "30.0k cmd/s, 86%")
        );
    }

    #[test]
    fn the_batch_endpoint_is_judged_on_the_write_sides_cpu_per_command() {
        let mut lean = measured("write.batch", 25_000.0);
        lean.cpu_cores = cores(&[("write-side", 0.45), ("bench", 0.3)]);
        let (verdict, shown, _) = judged(&[lean], false, "batch endpoint <= 20 us");
        assert_eq!(
            (verdict.as_str(), shown.as_str()),
            (
                "reached",
                "18.0 us of write-side CPU per item at 25.0k cmd/s"
            )
        );
        let mut heavy = measured("write.batch", 25_000.0);
        heavy.cpu_cores = cores(&[("write-side", 0.95)]);
        let (verdict, shown, _) = judged(&[heavy], false, "batch endpoint <= 20 us");
        assert_eq!(
            (verdict.as_str(), shown.as_str()),
            (
                "not reached",
                "38.0 us of write-side CPU per item at 25.0k cmd/s"
            )
        );
        let unwatched = measured("write.batch", 25_000.0);
        let (verdict, shown, _) = judged(&[unwatched], false, "batch endpoint <= 20 us");
        assert_eq!(
            (verdict.as_str(), shown.as_str()),
            ("not reached", "write-side CPU not measured (25.0k cmd/s)")
        );
    }

    #[test]
    fn a_ratio_threshold_without_a_measured_limit_is_not_reached() {
        let row = measured("projector.event_index", 2_000.0);
        assert_eq!(
            judged(&[row], false, "ES projector (event_index)"),
            owned("not reached", "2000 ev/s, no limit measured of "),
            "and no bottleneck: no CPU was watched"
        );
    }

    #[test]
    fn the_limit_a_projector_is_judged_against_is_named() {
        let row = measured("projector.order_summary", 60_000.0)
            .ratio(Some(("postgres upsert", 80_000.0)));
        assert_eq!(
            judged(&[row], false, "PG projector"),
            owned("reached", "60.0k ev/s, 75% of postgres upsert")
        );
    }

    #[test]
    fn a_missing_measurement_is_skipped_as_not_run() {
        for t in judge(&[], false) {
            assert_eq!(
                (t.verdict, t.measured, t.bottleneck),
                owned("skipped", "not run")
            );
        }
    }

    #[test]
    fn a_failed_or_skipped_row_is_skipped_with_its_state_and_first_reason_line() {
        let failed = "Order_Summary did not catch up\nlog tail: …".to_owned();
        let not_built = "factline-read-api not built".to_owned();
        let rows = [
            Row::not_run("p", "projector.order_summary", "os", State::Failed, failed),
            Row::not_run("r", "read.by_id", "by id", State::Skipped, not_built),
        ];
        assert_eq!(
            judged(&rows, false, "PG projector"),
            owned("skipped", "failed: order_summary did not catch up")
        );
        assert_eq!(
            judged(&rows, false, "read by id"),
            owned("skipped", "skipped: factline-read-api not built")
        );
    }

    #[test]
    fn quick_mode_says_why_the_end_to_end_target_is_not_measured() {
        let e2e = "end-to-end";
        assert_eq!(
            judged(&[], true, e2e),
            owned("skipped", "quick mode offers other rates")
        );
        assert_eq!(judged(&[], false, e2e), owned("skipped", "not run"));
        let row = measured("e2e.1000", 1000.0).latency(22.4, 135.2, 300.0);
        assert_eq!(
            judged(&[row], true, e2e),
            owned("reached", "p50 22 ms, p99 135 ms")
        );
    }

    #[test]
    fn verdict_words() {
        assert_eq!(verdict(true), "reached");
        assert_eq!(verdict(false), "not reached");
    }

    #[test]
    fn busiest_tells_a_saturated_core_from_waiting_and_notes_other_processes() {
        let with = |pairs: &[(&str, f64)]| {
            let mut row = measured("k", 1.0);
            row.cpu_cores = cores(pairs);
            busiest(&row)
        };
        assert_eq!(
            with(&[("order-summary", 0.95), ("postgres", 0.3)]).as_deref(),
            Some(
                "one process saturates a core (order-summary); cpu cores used: \
                 order-summary 0.95, postgres 0.30 (machine total 1.25 of 2)"
            )
        );
        assert_eq!(
            with(&[("write-side", 0.4), ("other", 0.5)]).as_deref(),
            Some(
                "not CPU-bound: waiting (round trips, batching linger, fsync, or too few \
                 requests in flight); cpu cores used: write-side 0.40 (machine total 0.90 of \
                 2); NOTE 0.50 cores used by other processes on the machine meanwhile"
            )
        );
        assert_eq!(with(&[("other", 1.0)]), None);
        assert_eq!(with(&[]), None);
    }
}
