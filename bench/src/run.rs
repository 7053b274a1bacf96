//! One bench run: set-up, then the stages in order (the stack at rest, limits of the systems underneath, write
//! side, the event archive (archiver and replay), projectors catching up a backlog, read API,
//! end-to-end visibility), then cleanup, and
//! the report with the targets judged. Each stage is a module of `stages`; a stage whose
//! service binary is not built is skipped with the reason, a stage that fails is reported as
//! failed and the run goes on.

use std::time::Instant;

use serde_json::Value;

use crate::config::{Args, STAGES};
use crate::report::Report;
use crate::stages::{self, setup, Bench};
use crate::targets;

/// Runs every stage and returns the report (also written as JSON to `args.out`).
pub async fn run(args: Args) -> Report {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut bench = Bench::new(args);
    eprintln!(
        "[bench] run {} (quick: {}), services from {}",
        bench.run,
        bench.s.quick,
        bench.binaries.dir.display()
    );
    match setup::setup(&mut bench).await {
        Ok(()) => {
            let runs = |stage| bench.args.runs(stage);
            let [at_rest, write_side, limits, archive, projectors, read_api, end_to_end] =
                STAGES.map(runs);
            if at_rest {
                stages::idle::run(&mut bench).await;
            }
            // before the limits stage produces the backlog: noida-db saves its whole state
            // after writes, so a million records held would slow every produce of this stage
            if write_side {
                stages::write_side::run(&mut bench).await;
            }
            if limits {
                stages::limits::run(&mut bench).await;
                stages::write_side::judge_against_producer(&mut bench);
            }
            if archive {
                stages::archive::run(&mut bench).await;
            }
            if projectors {
                stages::projectors::run(&mut bench).await;
            }
            if read_api {
                stages::read_api::run(&mut bench).await;
            }
            if end_to_end {
                stages::end_to_end::run(&mut bench).await;
            }
        }
        Err(e) => bench.fail("setup", "setup", "topics, schema, index", &e),
    }
    if let Some(service) = bench.read_api.take() {
        bench.stop_service("read-api", service).await;
    }
    if let Some(service) = bench.order_summary.take() {
        bench.stop_service("order-summary", service).await;
    }
    setup::cleanup(&bench).await;
    Report {
        started_at,
        quick: bench.s.quick,
        profile: bench.args.profile.clone(),
        settings: serde_json::to_value(&bench.s).unwrap_or(Value::Null),
        targets: targets::judge(&bench.rows, bench.s.quick),
        rows: bench.rows,
        peak_memory_mib: bench
            .memory_kb
            .iter()
            .map(|(k, v)| (k.clone(), (*v as f64 / 1024.0 * 10.0).round() / 10.0))
            .collect(),
        total_seconds: started.elapsed().as_secs_f64().round(),
    }
}
