//! The stack at rest: the write side, the read API and every registered projector started as
//! `make up` starts them (on the run's own empty topics, schema and indices), given time to
//! join their groups and settle, then the CPU of everything watched over the measured window
//! with no traffic at all: the services, the broker, PostgreSQL, the registry and the object
//! store. Runs first, before any backlog exists.

use std::time::{Duration, Instant};

use super::write_side::start_write_side;
use super::{Bench, Cores, Launch};
use crate::error::BenchError;
use crate::report::{Row, State};
use crate::services::Service;

/// The stage's name in the table.
pub const STAGE: &str = "at rest";

const KEY: &str = "idle.stack";
const LABEL: &str = "the whole stack, services up, no traffic";
const PROJECTOR_BINARY: &str = "factline-projector";

/// How long the idle stack is watched.
const WINDOW: Duration = Duration::from_secs(10);
/// How long the services get after they answer healthy, to join their groups and settle.
const SETTLE: Duration = Duration::from_secs(5);

/// Starts everything, measures, stops everything.
pub async fn run(b: &mut Bench) {
    for binary in [PROJECTOR_BINARY, "factline-write-side", "factline-read-api"] {
        if let Some(reason) = b.not_built(binary) {
            b.skip(STAGE, KEY, LABEL, reason);
            return;
        }
    }
    let mut started: Vec<(String, Service)> = Vec::new();
    let measured = start_all(b, &mut started).await;
    let result = match measured {
        Ok(()) => {
            tokio::time::sleep(SETTLE).await;
            let ((), cores) = b.with_cpu(tokio::time::sleep(WINDOW)).await;
            Ok(cores)
        }
        Err(e) => Err(e),
    };
    let services = started.len();
    for (name, service) in started {
        b.stop_service(&name, service).await;
    }
    match result {
        Ok(cores) => b.push(row(cores, services)),
        Err(e) => b.push(Row::not_run(
            STAGE,
            KEY,
            LABEL,
            State::Failed,
            e.to_string(),
        )),
    }
}

/// The row: the total of every watched process except the bench itself and the rest of the
/// machine, each one's share kept in the row's CPU column.
fn row(mut cores: Cores, services: usize) -> Row {
    cores.remove("bench");
    let other = cores.remove("other").unwrap_or_default();
    let total: f64 = cores.values().sum();
    let mut each: Vec<(&String, &f64)> = cores.iter().collect();
    each.sort_by(|a, b| b.1.total_cmp(a.1));
    let each: Vec<String> = each.iter().map(|(n, c)| format!("{n} {c:.3}")).collect();
    let note = format!(
        "{services} services over {} s: {}; the rest of the machine used {other:.2} cores",
        WINDOW.as_secs(),
        each.join(", ")
    );
    Row::ok(STAGE, KEY, LABEL, "cores", total)
        .cpu(cores)
        .note(note)
}

/// Starts the write side, every registered projector and the read API under the run's `i`
/// prefix; each one started is added to `started` (and to the CPU watch) at once, so a failure
/// half-way still stops them all.
async fn start_all(b: &mut Bench, started: &mut Vec<(String, Service)>) -> Result<(), BenchError> {
    let prefix = b.prefix("i");
    let service = start_write_side(b, "idle-write-side", &prefix).await?;
    b.cpu.remove("write-side"); // watched under this stage's name instead
    b.cpu.add("idle-write-side", service.pid(), false);
    started.push(("idle-write-side".into(), service));
    for projector in registered(b)? {
        let name = format!("idle-{projector}");
        let mut extra_env = vec![
            ("DATABASE_URL".to_owned(), b.idle_db_url.clone()),
            ("PROJECTOR_INDEX_PREFIX".to_owned(), prefix.clone()),
        ];
        for var in ["ARCHIVE_S3_ENDPOINT", "ARCHIVE_S3_BUCKET"] {
            if let Ok(value) = std::env::var(var) {
                extra_env.push((var.to_owned(), value));
            }
        }
        extra_env.push(("ARCHIVE_S3_PREFIX".into(), format!("bench/{}/idle/", b.run)));
        let service = b
            .start(Launch {
                name: &name,
                binary: PROJECTOR_BINARY,
                args: vec![projector.clone()],
                env_prefix: "PROJECTOR",
                topic_prefix: &prefix,
                health: "/healthz",
                extra_env,
            })
            .await?;
        b.cpu.add(&name, service.pid(), false);
        started.push((name, service));
    }
    let service = b
        .start(Launch {
            name: "idle-read-api",
            binary: "factline-read-api",
            args: Vec::new(),
            env_prefix: "READ_API",
            topic_prefix: &prefix,
            health: "/healthz",
            extra_env: vec![
                ("DATABASE_URL".to_owned(), b.idle_db_url.clone()),
                ("READ_API_INDEX_PREFIX".to_owned(), prefix.clone()),
            ],
        })
        .await?;
    b.cpu.add("idle-read-api", service.pid(), false);
    started.push(("idle-read-api".into(), service));
    wait_assigned(started).await
}

/// The registered projectors (`factline-projector --list`, one per line, name first).
fn registered(b: &Bench) -> Result<Vec<String>, BenchError> {
    let binary = b.binaries.dir.join(PROJECTOR_BINARY);
    let output = std::process::Command::new(&binary)
        .arg("--list")
        .output()
        .map_err(|e| BenchError::Idle(format!("{} --list: {e}", binary.display())))?;
    if !output.status.success() {
        return Err(BenchError::Idle(format!(
            "{} --list failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split('\t').next())
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Waits until every projector's `/healthz` lists partitions: all have joined their groups.
async fn wait_assigned(started: &[(String, Service)]) -> Result<(), BenchError> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let projectors = started
        .iter()
        .filter(|(name, _)| name != "idle-write-side" && name != "idle-read-api");
    for (name, service) in projectors {
        loop {
            let health: Option<serde_json::Value> = match http
                .get(format!("http://{}/healthz", service.addr))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let assigned = health
                .as_ref()
                .and_then(|h| h.get("partitions")?.as_array().map(|p| !p.is_empty()))
                .unwrap_or(false);
            if assigned {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Idle(format!(
                    "{name} had no partition within 120 s: {health:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
