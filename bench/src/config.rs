//! The bench's settings: one struct, every field documented, read from flags or `BENCH_*`
//! variables; sizes left unset get the full-run or the quick-run default.

use std::path::PathBuf;

use serde::Serialize;

/// Command-line flags and environment variables of `factline-bench`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "factline-bench",
    about = "throughput and latency of every factline stage, against its own limit"
)]
pub struct Args {
    /// Tiny sizes so every stage runs in well under two minutes (CI).
    #[arg(long, env = "BENCH_QUICK", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    pub quick: bool,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// Schema registry URL.
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: String,
    /// PostgreSQL URL (the bench works in its own schema).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Elasticsearch URL.
    #[arg(long, env = "ELASTICSEARCH_URL")]
    pub elasticsearch_url: String,
    /// Directory of the built service binaries (`target/release`).
    #[arg(long, env = "BENCH_BIN_DIR")]
    pub bin_dir: PathBuf,
    /// Repository root (mappings, `.dev/run` PID files).
    #[arg(long, env = "BENCH_REPO_ROOT", default_value = ".")]
    pub repo_root: PathBuf,
    /// Where the JSON results go.
    #[arg(long, env = "BENCH_OUT", default_value = "target/bench/results.json")]
    pub out: PathBuf,
    /// Order events in the PostgreSQL backlog (raw producer, raw consumer, raw upsert and the
    /// order_summary projector all use it). Full 1000000, quick 3000.
    #[arg(long, env = "BENCH_PG_EVENTS")]
    pub pg_events: Option<u64>,
    /// Order events in the Elasticsearch backlog (plus one CustomerRegistered per 4 orders).
    /// Full 15000, quick 300.
    #[arg(long, env = "BENCH_ES_EVENTS")]
    pub es_events: Option<u64>,
    /// Partitions of the bench topics.
    #[arg(long, env = "BENCH_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    /// Concurrent keep-alive clients for the read API. Full 64, quick 8.
    #[arg(long, env = "BENCH_CLIENTS")]
    pub clients: Option<usize>,
    /// Concurrent clients of the search query (a full-text query scans the index on noida, so
    /// 64 clients only measure its timeouts). Full 4, quick 2.
    #[arg(long, env = "BENCH_SEARCH_CLIENTS")]
    pub search_clients: Option<usize>,
    /// Concurrent keep-alive clients for the single-command endpoint. The write side answers
    /// after the broker's acknowledgement (linger + acks=all), so throughput needs many
    /// requests in flight. Full 256, quick 8.
    #[arg(long, env = "BENCH_WRITE_CLIENTS")]
    pub write_clients: Option<usize>,
    /// Seconds measured per closed-loop HTTP stage. Full 15, quick 1.
    #[arg(long, env = "BENCH_SECONDS")]
    pub seconds: Option<f64>,
    /// Commands per batch request. Full 1000, quick 50.
    #[arg(long, env = "BENCH_BATCH_ITEMS")]
    pub batch_items: Option<usize>,
    /// Concurrent clients of the batch endpoint.
    #[arg(long, env = "BENCH_BATCH_CLIENTS", default_value_t = 4)]
    pub batch_clients: usize,
    /// Single commands offered per second (open loop) in the write-side stage, judged on
    /// their p99. Full 10000, quick 200.
    #[arg(long, env = "BENCH_SINGLE_RATE")]
    pub single_rate: Option<f64>,
    /// Offered loads of the end-to-end stage, commands/s. Full 1000,5000; quick 100,300.
    #[arg(long, env = "BENCH_E2E_RATES", value_delimiter = ',')]
    pub e2e_rates: Option<Vec<f64>>,
    /// Seconds per end-to-end load. Full 20, quick 2.
    #[arg(long, env = "BENCH_E2E_SECONDS")]
    pub e2e_seconds: Option<f64>,
    /// Commands whose visibility is tracked per second in the end-to-end stage (each is read
    /// back once, with its position as `consistent_with`).
    #[arg(long, env = "BENCH_E2E_TRACKED_PER_SECOND", default_value_t = 100.0)]
    pub e2e_tracked_per_second: f64,
    /// Rows per transaction of the raw PostgreSQL upsert.
    #[arg(long, env = "BENCH_PG_BATCH_ROWS", default_value_t = 1000)]
    pub pg_batch_rows: usize,
    /// Documents per raw `_bulk` request (the ES projectors' batch size by default).
    #[arg(long, env = "BENCH_ES_BULK_DOCS", default_value_t = 500)]
    pub es_bulk_docs: usize,
    /// Longest a projector may take to catch up, seconds.
    #[arg(long, env = "BENCH_CATCH_UP_TIMEOUT_SECS", default_value_t = 1800)]
    pub catch_up_timeout_secs: u64,
    /// Keep the bench's topics, schema and indices afterwards.
    #[arg(long, env = "BENCH_KEEP", value_parser = clap::builder::FalseyValueParser::new(), default_value = "false")]
    pub keep: bool,
    /// Build profile of the binaries in `bin_dir`, for the report.
    #[arg(long, env = "BENCH_PROFILE", default_value = "release")]
    pub profile: String,
    /// The stages to run, in their fixed order, comma-separated (default: all): at_rest,
    /// write_side, limits, archive, projectors, read_api, end_to_end. The stages a selected
    /// one needs run too: `limits` produces the backlogs of `archive` and `projectors`, and
    /// `projectors` leaves the `order_summary` projector running for `read_api` and
    /// `end_to_end`.
    #[arg(long, env = "BENCH_STAGES", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(STAGES))]
    pub stages: Vec<String>,
}

/// Every stage, in the order a run takes them.
pub const STAGES: [&str; 7] = [
    "at_rest",
    "write_side",
    "limits",
    "archive",
    "projectors",
    "read_api",
    "end_to_end",
];

/// The stages whose results `stage` needs.
fn needs(stage: &str) -> &'static [&'static str] {
    match stage {
        "archive" | "projectors" => &["limits"],
        "read_api" | "end_to_end" => &["projectors"],
        _ => &[],
    }
}

impl Args {
    /// Whether `stage` (one of [`STAGES`]) is part of this run: selected, or needed by a
    /// stage that is.
    pub fn runs(&self, stage: &str) -> bool {
        self.stages.is_empty()
            || self
                .stages
                .iter()
                .any(|selected| selected == stage || needs_transitively(selected, stage))
    }
}

fn needs_transitively(stage: &str, other: &str) -> bool {
    needs(stage)
        .iter()
        .any(|&n| n == other || needs_transitively(n, other))
}

/// The resolved settings of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Quick mode.
    pub quick: bool,
    /// Order events in the PostgreSQL backlog.
    pub pg_events: u64,
    /// Order events in the Elasticsearch backlog.
    pub es_events: u64,
    /// Topic partitions.
    pub partitions: i32,
    /// Closed-loop clients of the read API.
    pub clients: usize,
    /// Closed-loop clients of the search query.
    pub search_clients: usize,
    /// Closed-loop clients of the single-command endpoint.
    pub write_clients: usize,
    /// Seconds per closed-loop stage.
    pub seconds: f64,
    /// Warm-up before each closed-loop measurement, seconds.
    pub warmup_seconds: f64,
    /// Commands per batch request.
    pub batch_items: usize,
    /// Batch clients.
    pub batch_clients: usize,
    /// Single commands offered per second (open loop).
    pub single_rate: f64,
    /// End-to-end offered loads.
    pub e2e_rates: Vec<f64>,
    /// Seconds per end-to-end load.
    pub e2e_seconds: f64,
    /// Tracked commands per second.
    pub e2e_tracked_per_second: f64,
    /// Rows per raw upsert transaction.
    pub pg_batch_rows: usize,
    /// Documents per raw bulk request.
    pub es_bulk_docs: usize,
    /// Catch-up time limit, seconds.
    pub catch_up_timeout_secs: u64,
}

impl Args {
    /// Sizes resolved for the mode.
    pub fn settings(&self) -> Settings {
        let q = self.quick;
        let seconds = self.seconds.unwrap_or(if q { 1.0 } else { 15.0 });
        Settings {
            quick: q,
            pg_events: self.pg_events.unwrap_or(if q { 3_000 } else { 1_000_000 }),
            es_events: self.es_events.unwrap_or(if q { 300 } else { 15_000 }),
            partitions: self.partitions.max(1),
            clients: self.clients.unwrap_or(if q { 8 } else { 64 }).max(1),
            search_clients: self.search_clients.unwrap_or(if q { 2 } else { 4 }).max(1),
            write_clients: self.write_clients.unwrap_or(if q { 8 } else { 256 }).max(1),
            seconds,
            warmup_seconds: if q { 0.3 } else { 2.0 },
            batch_items: self.batch_items.unwrap_or(if q { 50 } else { 1000 }).max(1),
            batch_clients: self.batch_clients.max(1),
            single_rate: self
                .single_rate
                .unwrap_or(if q { 200.0 } else { 10_000.0 })
                .max(1.0),
            e2e_rates: self.e2e_rates.clone().unwrap_or_else(|| {
                if q {
                    vec![100.0, 300.0]
                } else {
                    vec![1000.0, 5000.0]
                }
            }),
            e2e_seconds: self.e2e_seconds.unwrap_or(if q { 2.0 } else { 20.0 }),
            e2e_tracked_per_second: self.e2e_tracked_per_second.max(1.0),
            pg_batch_rows: self.pg_batch_rows.max(1),
            es_bulk_docs: self.es_bulk_docs.max(1),
            catch_up_timeout_secs: self.catch_up_timeout_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let required = [
            "factline-bench",
            "--kafka-brokers=k:9092",
            "--schema-registry-url=http://r",
            "--database-url=postgres://d",
            "--elasticsearch-url=http://e",
            "--bin-dir=target/release",
        ];
        Args::try_parse_from(required.iter().chain(extra))
    }

    fn args(extra: &[&str]) -> Args {
        parse(extra).expect("valid arguments")
    }

    #[test]
    fn every_stage_runs_when_none_is_selected() {
        let a = args(&[]);
        assert!(STAGES.iter().all(|s| a.runs(s)));
    }

    #[test]
    fn a_selected_stage_brings_the_stages_it_needs_and_no_other() {
        let a = args(&["--stages=end_to_end"]);
        let running: Vec<&str> = STAGES.into_iter().filter(|s| a.runs(s)).collect();
        assert_eq!(running, ["limits", "projectors", "end_to_end"]);
        let a = args(&["--stages", "at_rest,archive"]);
        let running: Vec<&str> = STAGES.into_iter().filter(|s| a.runs(s)).collect();
        assert_eq!(running, ["at_rest", "limits", "archive"]);
    }

    #[test]
    fn an_unknown_stage_is_refused() {
        assert!(parse(&["--stages=projector"]).is_err());
    }
}
