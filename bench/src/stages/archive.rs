//! The event archive: the archiver (`factline-projector event_archive`, the shipped binary with
//! its defaults) catching up the PostgreSQL backlog from process start, judged against the raw
//! consumer on the same backlog (`limit.kafka_consume`); then `factline replay --yes` sending
//! that archived backlog to a topic of its own, judged against the raw producer
//! (`limit.kafka_produce`). Objects go to the stack's bucket (`ARCHIVE_S3_ENDPOINT`,
//! `ARCHIVE_S3_BUCKET`) under a prefix of the run's own (`bench/{run}/`); the manifest to the
//! run's schema. Runs before the projectors stage, so no other projector shares the machine.

use std::time::{Duration, Instant};

use super::{Bench, Launch};
use crate::error::BenchError;
use crate::pg;
use crate::report::Row;

/// The stage's name in the table.
pub const STAGE: &str = "archive";

const PROJECTOR_BINARY: &str = "factline-projector";
const CLI_BINARY: &str = "factline";
const ARCHIVER_KEY: &str = "archive.archiver";
const REPLAY_KEY: &str = "archive.replay";

/// The archive's variables for the run: the stack's bucket, the run's prefix.
fn archive_env(b: &Bench) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for name in ["ARCHIVE_S3_ENDPOINT", "ARCHIVE_S3_BUCKET"] {
        match std::env::var(name) {
            Ok(value) if !value.is_empty() => env.push((name.to_owned(), value)),
            _ => return Err(format!("{name} is not set (scripts/stack.sh env sets it)")),
        }
    }
    env.push(("ARCHIVE_S3_PREFIX".into(), format!("bench/{}/", b.run)));
    Ok(env)
}

/// Measures the archiver, then the replay.
pub async fn run(b: &mut Bench) {
    let archiver_label = format!(
        "event-archive (s3 + manifest), {} records backlog",
        b.pg_ends.values().sum::<i64>()
    );
    let replay_label = "factline replay --yes to a topic (from the archive)";
    let env = match archive_env(b) {
        Ok(env) => env,
        Err(reason) => {
            b.skip(STAGE, ARCHIVER_KEY, &archiver_label, reason.clone());
            b.skip(STAGE, REPLAY_KEY, replay_label, reason);
            return;
        }
    };
    if !archiver(b, &archiver_label, &env).await {
        b.skip(
            STAGE,
            REPLAY_KEY,
            replay_label,
            "the archiver did not archive the backlog".into(),
        );
        return;
    }
    replay(b, replay_label, &env).await;
    b.delete_topics_now(&b.prefix("r")).await;
}

/// The archiver from process start to the end of the backlog; whether it got there.
async fn archiver(b: &mut Bench, label: &str, env: &[(String, String)]) -> bool {
    if let Some(reason) = b.not_built(PROJECTOR_BINARY) {
        b.skip(STAGE, ARCHIVER_KEY, label, reason);
        return false;
    }
    let ends = b.pg_ends.clone();
    let total: i64 = ends.values().sum();
    let prefix = b.prefix("p");
    b.settle("the archiver").await;
    let cpu = b.cpu.snapshot();
    let started = Instant::now();
    let launched = b
        .start(Launch {
            name: "event-archive",
            binary: PROJECTOR_BINARY,
            args: vec!["event_archive".into()],
            env_prefix: "PROJECTOR",
            topic_prefix: &prefix,
            health: "/healthz",
            extra_env: env.to_vec(),
        })
        .await;
    let mut service = match launched {
        Ok(s) => s,
        Err(e) => {
            b.fail(STAGE, ARCHIVER_KEY, label, &e);
            return false;
        }
    };
    b.cpu.add("event-archive", service.pid(), false);
    let pid = service.pid();
    let caught = pg::wait_caught_up(
        &b.db_url,
        "event_archive",
        1,
        &ends,
        started,
        Duration::from_secs(b.s.catch_up_timeout_secs),
        move || std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    service.sample_memory();
    let done = match caught {
        Ok(c) => {
            let secs = c.elapsed.as_secs_f64();
            let limit = b.rate("limit.kafka_consume");
            let row = Row::ok(STAGE, ARCHIVER_KEY, label, "records/s", total as f64 / secs)
                .measured(total as u64, secs)
                .ratio(limit.map(|l| ("kafka consume", l)))
                .cpu(cores)
                .note(match c.first_position {
                    Some(first) if secs - first.as_secs_f64() >= 0.2 * secs => format!(
                        "from process start; first batch committed after {:.1} s, {:.0} \
                         records/s after it",
                        first.as_secs_f64(),
                        total as f64 / (secs - first.as_secs_f64())
                    ),
                    Some(first) => format!(
                        "from process start; first batch committed after {:.1} s, the rest \
                         within {:.2} s",
                        first.as_secs_f64(),
                        secs - first.as_secs_f64()
                    ),
                    None => "from process start".to_owned(),
                });
            b.push(row);
            true
        }
        Err(e) => {
            let error = BenchError::CatchUp {
                source: e,
                tail: service.log_tail(5),
            };
            b.fail(STAGE, ARCHIVER_KEY, label, &error);
            false
        }
    };
    b.stop_service("event-archive", service).await;
    done
}

/// `factline replay --yes` of the archived backlog into a topic of the run's own.
async fn replay(b: &mut Bench, label: &str, env: &[(String, String)]) {
    let Some(cli) = b.binaries.find(CLI_BINARY) else {
        let reason = format!("{CLI_BINARY} not built in {}", b.binaries.dir.display());
        b.skip(STAGE, REPLAY_KEY, label, reason);
        return;
    };
    let source = format!("{}orders", b.prefix("p"));
    let target = format!("{}orders", b.prefix("r"));
    let config = factline_schemas::topics::client_config(&b.args.kafka_brokers);
    if let Err(e) = factline_schemas::topics::create_topics(
        &config,
        std::slice::from_ref(&target),
        b.s.partitions,
        1,
    )
    .await
    {
        let reason = format!("cannot create {target}: {e}");
        b.push(Row::not_run(
            STAGE,
            REPLAY_KEY,
            label,
            crate::report::State::Failed,
            reason,
        ));
        return;
    }
    b.topics.push(target.clone());
    let mut command = tokio::process::Command::new(cli);
    command
        .args(["--output", "json", "--database-url", &b.db_url])
        .args(["--kafka-brokers", &b.args.kafka_brokers])
        .args(["replay", "--topic", &source, "--to-topic", &target, "--yes"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let timeout = Duration::from_secs(b.s.catch_up_timeout_secs);
    b.settle("the replay").await;
    let started = Instant::now();
    let (output, cores) = b
        .with_cpu(tokio::time::timeout(timeout, command.output()))
        .await;
    let secs = started.elapsed().as_secs_f64();
    let failed = |reason: String| {
        Row::not_run(
            STAGE,
            REPLAY_KEY,
            label,
            crate::report::State::Failed,
            reason,
        )
    };
    let output = match output {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return b.push(failed(format!("cannot run {CLI_BINARY}: {e}"))),
        Err(_) => return b.push(failed(format!("not done within {} s", timeout.as_secs()))),
    };
    let answer: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
    let Some(sent) = answer["sent"].as_u64().filter(|_| output.status.success()) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return b.push(failed(format!(
            "replay failed ({}): {}",
            output.status,
            tail.join(" | ")
        )));
    };
    let limit = b.rate("limit.kafka_produce");
    let row = Row::ok(STAGE, REPLAY_KEY, label, "records/s", sent as f64 / secs)
        .measured(sent, secs)
        .ratio(limit.map(|l| ("kafka produce", l)))
        .cpu(cores)
        .note("from process start: reads the manifest and the objects, up to 5000 copies awaiting their ack");
    b.push(row);
}
