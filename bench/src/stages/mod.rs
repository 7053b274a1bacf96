//! The stages of one run and the state they share: the run's names (topic prefix, schema,
//! index prefix), the datasets, the services kept running from one stage to the next, the
//! rows measured so far and the peak memory seen per service. Each stage is one module; a
//! stage that cannot run records a skipped or failed row and the run goes on.

pub mod archive;
pub mod end_to_end;
pub mod idle;
pub mod limits;
pub mod projectors;
pub mod read_api;
pub mod setup;
pub mod write_side;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use factline_schemas::EventCodec;

use crate::config::{Args, Settings};
use crate::data::{self, Dataset};
use crate::error::BenchError;
use crate::es::Es;
use crate::load::{self, Judge, LoadError, LoadResult, MakeRequest};
use crate::report::{human, Row, State};
use crate::services::{free_addr, wait_quiet, Binaries, CpuWatch, Service};

/// Cores used per watched process during a measurement (1.0 = one core).
pub(crate) type Cores = BTreeMap<String, f64>;

/// How to start one service binary for a stage.
pub(crate) struct Launch<'a> {
    /// Name in logs and log file.
    pub name: &'a str,
    /// Binary in the build directory.
    pub binary: &'a str,
    /// Its command-line arguments.
    pub args: Vec<String>,
    /// Prefix of its environment variables (`WRITE_SIDE`, `PROJECTOR`, `READ_API`).
    pub env_prefix: &'a str,
    /// Its topic prefix (`{env_prefix}_TOPIC_PREFIX`).
    pub topic_prefix: &'a str,
    /// Path answering 200 once it is ready.
    pub health: &'a str,
    /// More environment variables.
    pub extra_env: Vec<(String, String)>,
}

/// Everything shared by the stages of one run.
pub struct Bench {
    pub(crate) args: Args,
    pub(crate) s: Settings,
    /// The run's name: prefix of its topics and indices, name of its schema (and, with `_s`,
    /// of the sealed backlog's).
    pub(crate) run: String,
    pub(crate) binaries: Binaries,
    pub(crate) cpu: CpuWatch,
    pub(crate) rows: Vec<Row>,
    pub(crate) memory_kb: BTreeMap<String, u64>,
    pub(crate) schema: String,
    /// The database URL with the run's schema on its search path (after set-up).
    pub(crate) db_url: String,
    pub(crate) topics: Vec<String>,
    pub(crate) es: Es,
    pub(crate) codec: EventCodec,
    pub(crate) pg_data: Dataset,
    pub(crate) es_data: Dataset,
    /// End offsets of the PostgreSQL backlog, per topic and partition.
    pub(crate) pg_ends: HashMap<(String, i32), i64>,
    /// End offsets of the Elasticsearch backlog, per topic and partition.
    pub(crate) es_ends: HashMap<(String, i32), i64>,
    /// The database URL of the schema the projector on the sealed backlog writes to.
    pub(crate) sealed_db_url: String,
    /// The database URL of the stack at rest (its own schema, `{schema}_i`).
    pub(crate) idle_db_url: String,
    /// End offsets of the sealed backlog (the PostgreSQL backlog with its personal fields
    /// encrypted), per topic and partition.
    pub(crate) sealed_ends: HashMap<(String, i32), i64>,
    /// Kept running after the projectors stage for the read API and end-to-end stages.
    pub(crate) order_summary: Option<Service>,
    /// Kept running after the read API stage for the end-to-end stage.
    pub(crate) read_api: Option<Service>,
}

impl Bench {
    /// A run with a fresh name; nothing is created until set-up.
    pub fn new(args: Args) -> Bench {
        let s = args.settings();
        let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let logs = args
            .out
            .parent()
            .map_or_else(|| PathBuf::from("logs"), |p| p.join("logs"));
        Bench {
            binaries: Binaries {
                dir: args.bin_dir.clone(),
                logs,
            },
            cpu: CpuWatch::new(&args.repo_root.join(".dev/run")),
            rows: Vec::new(),
            memory_kb: BTreeMap::new(),
            schema: run.clone(),
            db_url: args.database_url.clone(),
            topics: Vec::new(),
            es: Es::new(&args.elasticsearch_url),
            codec: EventCodec::new(&args.schema_registry_url),
            pg_data: Dataset::new(
                &format!("{run}p"),
                (s.pg_events / data::EVENTS_PER_ORDER / 4).max(1),
            ),
            es_data: Dataset::new(
                &format!("{run}e"),
                (s.es_events / data::EVENTS_PER_ORDER / 4).max(1),
            ),
            pg_ends: HashMap::new(),
            es_ends: HashMap::new(),
            sealed_db_url: args.database_url.clone(),
            idle_db_url: args.database_url.clone(),
            sealed_ends: HashMap::new(),
            order_summary: None,
            read_api: None,
            run,
            s,
            args,
        }
    }

    /// The prefix of the run's topics and indices for one backlog (`p`, `e`, `w`, `s`).
    pub(crate) fn prefix(&self, what: &str) -> String {
        format!("{}_{what}_", self.run)
    }

    /// Records a row and logs it.
    pub(crate) fn push(&mut self, row: Row) {
        let line = match row.state {
            State::Ok => format!(
                "{} / {}: {} {}{}",
                row.stage,
                row.label,
                human(row.rate.unwrap_or_default()),
                row.unit,
                row.p99_ms
                    .map_or(String::new(), |p| format!(", p99 {p:.2} ms"))
            ),
            _ => format!(
                "{} / {}: {:?} {}",
                row.stage,
                row.label,
                row.state,
                row.reason.clone().unwrap_or_default()
            ),
        };
        eprintln!("[bench] {line}");
        self.rows.push(row);
    }

    /// Records a failed measurement; its reason is the error's message.
    pub(crate) fn fail(&mut self, stage: &str, key: &str, label: &str, error: &BenchError) {
        self.push(Row::not_run(
            stage,
            key,
            label,
            State::Failed,
            error.to_string(),
        ));
    }

    /// Records a measurement that could not run (a service not built, a stage before failed).
    pub(crate) fn skip(&mut self, stage: &str, key: &str, label: &str, reason: String) {
        self.push(Row::not_run(stage, key, label, State::Skipped, reason));
    }

    /// Records each `(key, label)` of `rows` as not run: skipped or failed (`state`), with
    /// `why` (a reason, or the error) as the reason.
    pub(crate) fn not_run_all<K: AsRef<str>, L: AsRef<str>>(
        &mut self,
        stage: &str,
        rows: impl IntoIterator<Item = (K, L)>,
        state: State,
        why: &dyn Display,
    ) {
        for (key, label) in rows {
            let row = Row::not_run(
                stage,
                key.as_ref(),
                label.as_ref(),
                state.clone(),
                why.to_string(),
            );
            self.push(row);
        }
    }

    /// Why `binary` cannot run: it is not in the build directory.
    pub(crate) fn not_built(&self, binary: &str) -> Option<String> {
        self.binaries
            .find(binary)
            .is_none()
            .then(|| format!("{binary} not built in {}", self.binaries.dir.display()))
    }

    /// The rate measured under `key`, if it was measured.
    pub(crate) fn rate(&self, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.key == key && r.state == State::Ok)
            .and_then(|r| r.rate)
    }

    /// Keeps the highest resident memory seen for `name`.
    pub(crate) fn remember_memory(&mut self, name: &str, kb: u64) {
        let entry = self.memory_kb.entry(name.to_owned()).or_default();
        *entry = (*entry).max(kb);
    }

    /// Deletes the run's topics under `prefix` now instead of at the end of the run: once no
    /// later stage reads them. A broker that snapshots its whole state while it is written to
    /// (noida-db) would otherwise pay for their records in every later stage (measured: the
    /// write side's records left in place took the next stage's `202` p99 from 20 to 420 ms).
    pub(crate) async fn delete_topics_now(&mut self, prefix: &str) {
        let (done, kept): (Vec<String>, Vec<String>) = std::mem::take(&mut self.topics)
            .into_iter()
            .partition(|t| t.starts_with(prefix));
        self.topics = kept;
        crate::kafka::delete_topics(&self.args.kafka_brokers, &done).await;
    }

    /// Deletes every record of the run's `prefix` topics (`DeleteRecords` up to each
    /// partition's end, as retention would; the topics and offsets stay) and returns how many
    /// went: noida-db saves its whole state after writes, so a measurement taken while the
    /// broker holds records another one left would pay for them. Best effort: a failure is
    /// reported and the run goes on with the records.
    pub(crate) async fn delete_records(&self, prefix: &str) -> Option<i64> {
        let brokers = self.args.kafka_brokers.clone();
        let topics: Vec<String> = self
            .topics
            .iter()
            .filter(|t| t.starts_with(prefix))
            .cloned()
            .collect();
        let deleted =
            crate::kafka::blocking(move || crate::kafka::delete_records_to_end(&brokers, &topics))
                .await;
        match deleted {
            Ok(deleted) => Some(deleted),
            Err(e) => {
                eprintln!("[bench] deleting the records of {prefix}* failed, going on: {e}");
                None
            }
        }
    }

    /// Stops a service, stops watching its CPU and keeps its peak memory, both under `name`.
    pub(crate) async fn stop_service(&mut self, name: &str, service: Service) {
        self.cpu.remove(name);
        let kb = service.stop().await;
        self.remember_memory(name, kb);
    }

    /// Starts a service on a free port with the stack's connection settings, its address, its
    /// topic prefix and `extra_env`; returns once its health path answers.
    pub(crate) async fn start(&self, launch: Launch<'_>) -> Result<Service, BenchError> {
        let addr = free_addr()?;
        let prefix = launch.env_prefix;
        let mut env = vec![
            ("KAFKA_BROKERS".into(), self.args.kafka_brokers.clone()),
            (
                "SCHEMA_REGISTRY_URL".into(),
                self.args.schema_registry_url.clone(),
            ),
            ("DATABASE_URL".into(), self.db_url.clone()),
            (
                "ELASTICSEARCH_URL".into(),
                self.args.elasticsearch_url.clone(),
            ),
            (format!("{prefix}_ADDR"), addr.to_string()),
            (
                format!("{prefix}_TOPIC_PREFIX"),
                launch.topic_prefix.to_owned(),
            ),
        ];
        env.extend(launch.extra_env);
        let service = Service::start(
            &self.binaries,
            launch.name,
            launch.binary,
            &launch.args,
            addr,
            launch.health,
            &env,
        )
        .await?;
        Ok(service)
    }

    /// Waits for a quiet machine before a measurement ([`wait_quiet`]: below the at-rest
    /// target of 0.3 cores, at most 30 s), and says so in the log when it waited or gave up.
    /// A quick run (`make test`, whose figures are not judged) does not wait.
    pub(crate) async fn settle(&self, before: &str) {
        if self.args.quick {
            return;
        }
        let (waited, quiet) = wait_quiet(0.3, Duration::from_secs(30)).await;
        if !quiet {
            eprintln!(
                "[bench] the machine was still busy after {:.0} s; measuring {before} anyway",
                waited.as_secs_f64()
            );
        } else if waited > Duration::from_secs(1) {
            eprintln!(
                "[bench] waited {:.1} s for a quiet machine before {before}",
                waited.as_secs_f64()
            );
        }
    }

    /// Runs `work`; returns its output and the cores each watched process used meanwhile.
    pub(crate) async fn with_cpu<T>(&self, work: impl Future<Output = T>) -> (T, Cores) {
        let cpu = self.cpu.snapshot();
        let out = work.await;
        (out, cpu.cores_until(&self.cpu.snapshot()))
    }

    /// Closed-loop load on `addr` by `clients` clients for the run's warm-up then its measured
    /// seconds, with the cores used.
    pub(crate) async fn closed_loop(
        &self,
        addr: SocketAddr,
        clients: usize,
        make: MakeRequest,
        judge: Judge,
    ) -> (Result<LoadResult, LoadError>, Cores) {
        let warmup = Duration::from_secs_f64(self.s.warmup_seconds);
        let seconds = Duration::from_secs_f64(self.s.seconds);
        self.settle("a closed loop").await;
        self.with_cpu(load::closed_loop(
            addr, clients, warmup, seconds, make, judge,
        ))
        .await
    }
}

/// `row` with what HTTP load measured: `count` items over the window, the latencies of the
/// requests, failed requests by cause, and the cores used.
pub(crate) fn under_load(row: Row, count: u64, result: LoadResult, cores: Cores) -> Row {
    let mut row = row
        .measured(count, result.elapsed.as_secs_f64())
        .latency(result.ms(0.5), result.ms(0.99), result.ms(0.999))
        .cpu(cores);
    row.failures = result.failures;
    row
}
