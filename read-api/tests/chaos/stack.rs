//! An isolated copy of the whole system, run exactly as `make up` runs it: its own noida-db
//! (Kafka + Elasticsearch on free ports, its own data directory) started by
//! `scripts/stack.sh start noida`, its own database on the shared PostgreSQL server, the shared
//! schema registry, and the services started by `scripts/services.sh start` on free ports, with
//! PID files and logs in the run's own directory (`FACTLINE_DEV_DIR`). Nothing of the shared
//! stack or of a `make up` beside it is touched. Everything is stopped (and the database
//! dropped) at the end, also when a test fails; the logs of a failed run are kept.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

/// The sample projectors the suite kills: service name (PID file, log), projection name.
pub const PROJECTORS: [(&str, &str); 4] = [
    ("order_summary", "order_summary"),
    ("customer_stats", "customer_stats"),
    ("order_search", "order_search"),
    ("event_index", "event_index"),
];

/// Port offsets of the services inside the run's block of ports.
const KAFKA: u16 = 0;
const ELASTICSEARCH: u16 = 1;
const WRITE_SIDE: u16 = 2;
const READ_API: u16 = 3;
/// `scripts/services.sh` puts instance k of the j-th of P listed projectors on
/// base + j + P * (k - 1) and writes each instance's health URL beside its PID file.
const PROJECTOR_BASE: u16 = 5;
/// Ports the run needs: room for two instances of up to 17 projectors.
const BLOCK: u16 = 40;

/// Variables the scripts and services read that must come from the run, not from the
/// environment `cargo test` was started in (which names the shared stack).
const OWN_PREFIXES: &[&str] = &["WRITE_SIDE_", "PROJECTOR_", "READ_API_", "FACTLINE_"];
const OWN_NAMES: &[&str] = &[
    // make test's list of started components: the run's noida must not land in it
    "STARTED_FILE",
    "NOIDA_DATA_DIR",
    "KAFKA_PORT",
    "ES_PORT",
    // the run's broker is its own noida-db (Kafka and Elasticsearch), whatever the shared
    // stack's BROKER is: the suite stops and starts it as `stack.sh stop|start noida`
    "BROKER",
];

/// A running isolated system.
pub struct Stack {
    /// The repository root (where the scripts are).
    root: PathBuf,
    /// `FACTLINE_DEV_DIR` of the run: `run/` (PID files), `logs/`, `noida/`.
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    /// The write side's base URL.
    pub write: String,
    /// The read API's base URL.
    pub read: String,
    /// The run's Kafka bootstrap servers.
    pub kafka_brokers: String,
    admin_url: String,
    database: String,
    /// An HTTP client for the services.
    pub http: reqwest::Client,
    stopped: bool,
}

impl Stack {
    /// Starts noida-db and the services with `instances` instances of every projector.
    pub async fn start(name: &str, instances: usize) -> Stack {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the read API lives in the workspace")
            .to_path_buf();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let run = format!("{name}-{}", &Uuid::new_v4().simple().to_string()[..8]);
        let dir = target.join("chaos").join(&run);
        std::fs::create_dir_all(&dir).expect("create the run's directory");

        let admin_url = required("DATABASE_URL");
        let database = format!("chaos_{}", run.replace('-', "_"));
        execute(&admin_url, &format!("CREATE DATABASE {database}")).await;
        let database_url = with_database(&admin_url, &database);

        let port = free_block();
        let at = |offset: u16| format!("127.0.0.1:{}", port + offset);
        let env: Vec<(String, String)> = vec![
            ("FACTLINE_DEV_DIR".into(), dir.display().to_string()),
            ("KAFKA_PORT".into(), (port + KAFKA).to_string()),
            ("ES_PORT".into(), (port + ELASTICSEARCH).to_string()),
            ("KAFKA_BROKERS".into(), at(KAFKA)),
            (
                "ELASTICSEARCH_URL".into(),
                format!("http://{}", at(ELASTICSEARCH)),
            ),
            ("DATABASE_URL".into(), database_url),
            (
                "SCHEMA_REGISTRY_URL".into(),
                required("SCHEMA_REGISTRY_URL"),
            ),
            ("WRITE_SIDE_ADDR".into(), at(WRITE_SIDE)),
            ("READ_API_ADDR".into(), at(READ_API)),
            (
                "FACTLINE_PROJECTOR_BASE_PORT".into(),
                (port + PROJECTOR_BASE).to_string(),
            ),
        ];
        let stack = Stack {
            root,
            dir,
            env,
            write: format!("http://{}", at(WRITE_SIDE)),
            read: format!("http://{}", at(READ_API)),
            kafka_brokers: at(KAFKA),
            admin_url,
            database,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            stopped: false,
        };
        eprintln!("[chaos] {name}: isolated stack in {}", stack.dir.display());
        stack.stack(&["start", "noida"]).await;
        // The first start may build the services (make test builds them beforehand).
        stack
            .services_start_with(&["--instances", &instances.to_string()])
            .await;
        stack
    }

    fn command(&self, script: &str, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("bash");
        command
            .arg(self.root.join("scripts").join(script))
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null());
        for (key, _) in std::env::vars() {
            if OWN_PREFIXES.iter().any(|p| key.starts_with(p)) || OWN_NAMES.contains(&key.as_str())
            {
                command.env_remove(key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    async fn script(&self, script: &str, args: &[&str]) {
        let what = format!("scripts/{script} {}", args.join(" "));
        let output = tokio::time::timeout(
            Duration::from_secs(900),
            tokio::process::Command::from(self.command(script, args))
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 15 minutes"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            output.status.success(),
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `scripts/stack.sh ARGS` for the run's stack.
    pub async fn stack(&self, args: &[&str]) {
        self.script("stack.sh", args).await;
    }

    /// `scripts/services.sh start`: starts what is not running (what died included).
    pub async fn services_start(&self) {
        self.services_start_with(&[]).await;
    }

    async fn services_start_with(&self, args: &[&str]) {
        let mut all = vec!["start"];
        all.extend_from_slice(args);
        self.script("services.sh", &all).await;
    }

    /// The PID file name of instance `k` (1-based) of a service.
    pub fn instance_name(service: &str, k: usize) -> String {
        if k == 1 {
            service.to_owned()
        } else {
            format!("{service}-{k}")
        }
    }

    /// The PID `scripts/services.sh` recorded for a service instance.
    pub fn pid(&self, instance: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("run").join(format!("{instance}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Kills a service instance with SIGKILL and waits until it is gone; returns its PID.
    pub async fn sigkill(&self, instance: &str) -> u32 {
        let pid = self
            .pid(instance)
            .unwrap_or_else(|| panic!("{instance} has no PID file"));
        assert!(running(pid), "{instance} (pid {pid}) is not running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while running(pid) {
            assert!(
                Instant::now() < deadline,
                "{instance} (pid {pid}) still runs 30 s after SIGKILL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pid
    }

    /// The health URL of instance `k` of a projector, as `services.sh` recorded it.
    fn health_url(&self, service: &str, k: usize) -> String {
        let instance = Stack::instance_name(service, k);
        let file = self.dir.join("run").join(format!("{instance}.url"));
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("no health URL for {instance} at {}: {e}", file.display()))
            .trim()
            .to_owned()
    }

    /// Waits until instance `k` of a projector has committed a batch since it started, which it
    /// can only do once it has been assigned partitions (records keep arriving meanwhile).
    pub async fn wait_committing(&self, service: &str, k: usize, what: &str) {
        let url = self.health_url(service, k);
        let instance = Stack::instance_name(service, k);
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = Value::Null;
        loop {
            if let Ok(response) = self.http.get(&url).send().await {
                if let Ok(body) = response.json::<Value>().await {
                    if body["batches"].as_u64().is_some_and(|b| b > 0) {
                        return;
                    }
                    last = body;
                }
            }
            if Instant::now() > deadline {
                let projections = self.projections().await;
                panic!(
                    "{instance} ({what}) committed no batch within 90 s while records kept \
                     arriving: it was never assigned its partitions.\nits /healthz: {last}\n\
                     lag: {}\nlast lines of its log:\n{}",
                    lags(&projections),
                    self.log_tail(&instance, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /projections` of the read API (null when it does not answer).
    pub async fn projections(&self) -> Value {
        match self
            .http
            .get(format!("{}/projections", self.read))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Waits until every version of every projection has applied everything: the read API
    /// reports lag 0, and its positions are the topics' high watermarks as a consumer of our
    /// own sees them (so stale watermarks in the read API cannot pass for lag 0).
    pub async fn wait_caught_up(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let projections = self.projections().await;
            let behind = self.behind(&projections).await;
            if behind.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = PROJECTORS
                    .iter()
                    .map(|(service, _)| format!("--- {service}:\n{}", self.log_tail(service, 8)))
                    .collect();
                panic!(
                    "{what}: the projections did not catch up within 180 s:\n{}\nlag the read \
                     API reports: {}\n{}",
                    behind.join("\n"),
                    lags(&projections),
                    tails.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Why the projections have not caught up yet, one line each (empty: they have).
    async fn behind(&self, projections: &Value) -> Vec<String> {
        let Some(items) = projections["projections"].as_array() else {
            return vec![format!("no answer from /projections: {projections}")];
        };
        let mut behind = Vec::new();
        for (_, name) in PROJECTORS {
            if !items.iter().any(|p| p["name"] == name) {
                behind.push(format!("{name}: not listed by /projections yet"));
            }
        }
        let brokers = self.kafka_brokers.clone();
        let topics = vec!["customers".to_owned(), "orders".to_owned()];
        let ends = match tokio::task::spawn_blocking(move || {
            crate::readback::high_watermarks(&brokers, &topics)
        })
        .await
        {
            Ok(Ok(ends)) => ends,
            Ok(Err(e)) => return vec![format!("topics unreadable: {e}")],
            Err(e) => return vec![format!("topics unreadable: {e}")],
        };
        for p in items {
            for v in p["versions"].as_array().into_iter().flatten() {
                let name = format!("{}/v{}", p["name"].as_str().unwrap_or("?"), v["version"]);
                if v["lag_events"].as_i64() != Some(0) {
                    behind.push(format!(
                        "{name}: the read API reports lag {}",
                        v["lag_events"]
                    ));
                }
                let topics: Vec<&str> = v["topics"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str())
                    .collect();
                for ((topic, partition), end) in &ends {
                    if !topics.contains(&topic.as_str()) {
                        continue;
                    }
                    let next = v["positions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|x| x["topic"] == topic.as_str() && x["partition"] == *partition)
                        .and_then(|x| x["next_offset"].as_i64())
                        .unwrap_or(0);
                    if next < *end {
                        behind.push(format!(
                            "{name}: at {topic}/{partition}@{next}, the partition ends at {end}"
                        ));
                    }
                }
            }
        }
        behind
    }

    /// The last lines of a service's log.
    pub fn log_tail(&self, instance: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("logs").join(format!("{instance}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        strip_colours(&all[all.len().saturating_sub(lines)..].join("\n"))
    }

    /// Stops the services and noida-db and drops the database; the directory is removed.
    pub async fn stop(mut self) {
        self.script("services.sh", &["stop"]).await;
        self.stack(&["stop", "noida"]).await;
        execute(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
        )
        .await;
        let _ = std::fs::remove_dir_all(&self.dir);
        self.stopped = true;
    }
}

impl Drop for Stack {
    /// A failed test still stops everything it started; its logs stay for the reader.
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for (script, args) in [
            ("services.sh", &["stop"][..]),
            ("stack.sh", &["stop", "noida"]),
        ] {
            let _ = self
                .command(script, args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let (url, database) = (self.admin_url.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Runtime::new() {
                runtime.block_on(execute(
                    &url,
                    &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
                ));
            }
        })
        .join();
        eprintln!(
            "[chaos] logs of the failed run: {}",
            self.dir.join("logs").display()
        );
    }
}

/// Text without terminal colour sequences (`ESC [ ... m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a process runs (exists and is not a zombie).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// One line per projection version: name, lag and positions.
pub fn lags(projections: &Value) -> String {
    let Some(items) = projections["projections"].as_array() else {
        return format!("(no answer from /projections: {projections})");
    };
    items
        .iter()
        .flat_map(|p| {
            p["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |v| {
                    format!(
                        "{}/v{}: lag {} events",
                        p["name"].as_str().unwrap_or("?"),
                        v["version"],
                        v["lag_events"]
                    )
                })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through the project's scripts (scripts/stack.sh env)"
        )
    })
}

/// The URL with another database name (the path), keeping user, host and options.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let server = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

async fn execute(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at DATABASE_URL: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A block of `BLOCK` consecutive free ports below the ephemeral range, at a random place.
fn free_block() -> u16 {
    for _ in 0..200 {
        let random =
            u16::from_le_bytes([Uuid::new_v4().as_bytes()[0], Uuid::new_v4().as_bytes()[1]]);
        let start = 20_000 + random % 10_000;
        if (start..start + BLOCK).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return start;
        }
    }
    panic!("no block of {BLOCK} free ports between 20000 and 30040");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_options_kept() {
        assert_eq!(
            with_database("postgres://factline@127.0.0.1:55432/factline", "x"),
            "postgres://factline@127.0.0.1:55432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=require", "x"),
            "postgres://u:p@h:1/x?sslmode=require"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
        assert!(running(std::process::id()));
    }
}
