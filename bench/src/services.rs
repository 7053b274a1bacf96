//! The services under test as child processes: started from the built binaries on free ports
//! with the bench's topic prefix and PostgreSQL schema, logs in `target/bench/logs/`, waited for
//! on their health endpoint, and stopped by PID (SIGTERM, then SIGKILL). Also reads what the
//! kernel knows about a process: its peak resident memory (`VmHWM`) and CPU time, and the
//! PIDs of the stack's servers from `.dev/run/` to attribute CPU to the broker and PostgreSQL.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// A service failure.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The binary is not built.
    #[error("binary {0} not built")]
    Missing(String),
    /// Starting failed.
    #[error("cannot start {name}: {source}")]
    Spawn {
        /// Service.
        name: String,
        /// Cause.
        source: std::io::Error,
    },
    /// It never became healthy.
    #[error("{name} not healthy at {url} within {seconds} s; log tail:\n{tail}")]
    Unhealthy {
        /// Service.
        name: String,
        /// Health URL.
        url: String,
        /// Waited.
        seconds: u64,
        /// Last log lines.
        tail: String,
    },
    /// No free port.
    #[error("no free port: {0}")]
    Port(#[source] std::io::Error),
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_addr() -> Result<SocketAddr, ServiceError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(ServiceError::Port)?;
    listener.local_addr().map_err(ServiceError::Port)
}

/// Where the service binaries and logs are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `target/<profile>`.
    pub dir: PathBuf,
    /// Log directory.
    pub logs: PathBuf,
}

impl Binaries {
    /// The path of binary `name`, if it is built.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        path.is_file().then_some(path)
    }
}

/// A running service.
pub struct Service {
    /// Its name (log file, report key).
    pub name: String,
    /// Its HTTP address.
    pub addr: SocketAddr,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// Peak resident memory seen while it ran, kB.
    pub peak_kb: u64,
}

/// Variables a child must not inherit from the bench's own environment.
const OWN_PREFIXES: &[&str] = &["WRITE_SIDE_", "PROJECTOR_", "READ_API_", "BENCH_"];

impl Service {
    /// Starts `binary` (with `args`) as `name`, with `env` on top of the bench's environment
    /// (minus every service setting), and waits until `health_path` on `addr` answers 200.
    pub async fn start(
        binaries: &Binaries,
        name: &str,
        binary: &str,
        args: &[String],
        addr: SocketAddr,
        health_path: &str,
        env: &[(String, String)],
    ) -> Result<Service, ServiceError> {
        let path = binaries
            .find(binary)
            .ok_or_else(|| ServiceError::Missing(binary.to_owned()))?;
        std::fs::create_dir_all(&binaries.logs).map_err(|source| ServiceError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let log = binaries.logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|source| ServiceError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let err = file.try_clone().map_err(|source| ServiceError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let mut command = Command::new(&path);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if OWN_PREFIXES.iter().any(|p| key.starts_with(p)) {
                command.env_remove(key);
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn,librdkafka=error");
        }
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = command.spawn().map_err(|source| ServiceError::Spawn {
            name: name.to_owned(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let mut service = Service {
            name: name.to_owned(),
            addr,
            child,
            pid,
            log,
            peak_kb: 0,
        };
        service
            .wait_healthy(health_path, Duration::from_secs(60))
            .await?;
        Ok(service)
    }

    async fn wait_healthy(&mut self, path: &str, timeout: Duration) -> Result<(), ServiceError> {
        let url = format!("http://{}{path}", self.addr);
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(&url).timeout(Duration::from_secs(2)).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || started.elapsed() > timeout {
                return Err(ServiceError::Unhealthy {
                    name: self.name.clone(),
                    url,
                    seconds: timeout.as_secs(),
                    tail: log_tail(&self.log, 15),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Reads its peak resident memory now (kB) and keeps the largest value seen.
    pub fn sample_memory(&mut self) -> u64 {
        if let Some(kb) = vm_hwm_kb(self.pid) {
            self.peak_kb = self.peak_kb.max(kb);
        }
        self.peak_kb
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Stops it by PID: SIGTERM, up to 20 s for a graceful exit, then SIGKILL. Returns its peak
    /// resident memory (kB).
    pub async fn stop(mut self) -> u64 {
        self.sample_memory();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = %self.name, "no graceful exit in 20 s, killing");
            let _ = self.child.kill().await;
        }
        self.peak_kb
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `VmHWM` (peak resident set) of a process, kB.
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU time of a process (all threads), in clock ticks, with its parent PID.
fn cpu_ticks(pid: u32) -> Option<(u64, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may contain spaces: fields start after the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Which processes to account CPU for: by name, a PID and whether its children count too
/// (PostgreSQL runs a process per connection).
#[derive(Debug, Clone, Default)]
pub struct CpuWatch {
    targets: Vec<(String, u32, bool)>,
}

/// A CPU snapshot.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    ticks: BTreeMap<String, u64>,
}

impl CpuWatch {
    /// Watches the bench itself and the stack's servers whose PID files exist in `run_dir`
    /// (`noida.pid`: Kafka + Elasticsearch, or Elasticsearch alone when `nisshi.pid` exists:
    /// then nisshi is Kafka; `postgres.pid` and its backends; `registry.pid`; `objects.pid`:
    /// the S3 server).
    pub fn new(run_dir: &Path) -> CpuWatch {
        let mut watch = CpuWatch::default();
        watch.add("bench", std::process::id(), false);
        let noida = if run_dir.join("nisshi.pid").exists() {
            "noida (es)"
        } else {
            "noida (kafka+es)"
        };
        for (name, file, children) in [
            ("nisshi (kafka)", "nisshi.pid", false),
            (noida, "noida.pid", false),
            ("postgres", "postgres.pid", true),
            ("registry", "registry.pid", false),
            ("object store", "objects.pid", false),
        ] {
            if let Some(pid) = std::fs::read_to_string(run_dir.join(file))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                watch.add(name, pid, children);
            }
        }
        watch
    }

    /// Adds a process.
    pub fn add(&mut self, name: &str, pid: u32, children: bool) {
        self.targets.retain(|(n, _, _)| n != name);
        self.targets.push((name.to_owned(), pid, children));
    }

    /// Removes a process.
    pub fn remove(&mut self, name: &str) {
        self.targets.retain(|(n, _, _)| n != name);
    }

    /// CPU ticks of every target now.
    pub fn snapshot(&self) -> CpuSnapshot {
        let needs_children = self.targets.iter().any(|(_, _, c)| *c);
        let mut all: Vec<(u32, u64, u32)> = Vec::new();
        if needs_children {
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for entry in dir.flatten() {
                    if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                        if let Some((ticks, ppid)) = cpu_ticks(pid) {
                            all.push((pid, ticks, ppid));
                        }
                    }
                }
            }
        }
        let mut ticks = BTreeMap::new();
        for (name, pid, children) in &self.targets {
            let own = cpu_ticks(*pid).map_or(0, |(t, _)| t);
            let kids: u64 = if *children {
                all.iter()
                    .filter(|(_, _, ppid)| ppid == pid)
                    .map(|(_, t, _)| *t)
                    .sum()
            } else {
                0
            };
            ticks.insert(name.clone(), own + kids);
        }
        if let Some(busy) = machine_busy_ticks() {
            ticks.insert(MACHINE.to_owned(), busy);
        }
        CpuSnapshot {
            at: Instant::now(),
            ticks,
        }
    }
}

/// Waits until the whole machine is quiet (below `below` cores over half a second), at most
/// `max`. Returns how long it waited and whether the machine got quiet. Each measurement then
/// starts without the tail of the work before it: noida-db saving its whole state after a
/// stage's writes (8 s of a core with two million records in it), a PostgreSQL checkpoint.
pub async fn wait_quiet(below: f64, max: Duration) -> (Duration, bool) {
    const WINDOW: Duration = Duration::from_millis(500);
    let started = Instant::now();
    loop {
        let Some(before) = machine_busy_ticks() else {
            return (started.elapsed(), false);
        };
        tokio::time::sleep(WINDOW).await;
        let Some(after) = machine_busy_ticks() else {
            return (started.elapsed(), false);
        };
        let cores = after.saturating_sub(before) as f64 / TICKS_PER_SECOND / WINDOW.as_secs_f64();
        if cores < below {
            return (started.elapsed(), true);
        }
        if started.elapsed() >= max {
            return (started.elapsed(), false);
        }
    }
}

/// Key of the whole machine's busy time in a snapshot.
const MACHINE: &str = "machine";

/// Busy (not idle, not iowait) ticks of all CPUs together, from `/proc/stat`.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some(total.saturating_sub(idle))
}

impl CpuSnapshot {
    /// Cores used by each target between `self` and `later` (1.0 = one core busy), plus
    /// `other`: what the rest of the machine used meanwhile (other engineers' builds and tests
    /// on a shared box), so a figure taken on a busy machine says so.
    pub fn cores_until(&self, later: &CpuSnapshot) -> BTreeMap<String, f64> {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-6);
        let mut cores: BTreeMap<String, f64> = later
            .ticks
            .iter()
            .map(|(name, after)| {
                let before = self.ticks.get(name).copied().unwrap_or(0);
                let cores = after.saturating_sub(before) as f64 / TICKS_PER_SECOND / seconds;
                (name.clone(), cores)
            })
            .collect();
        if let Some(machine) = cores.remove(MACHINE) {
            let ours: f64 = cores.values().sum();
            cores.insert("other".to_owned(), (machine - ours).max(0.0));
        }
        cores
            .into_iter()
            .map(|(name, c)| (name, (c * 100.0).round() / 100.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let pid = std::process::id();
        assert!(vm_hwm_kb(pid).unwrap() > 0);
        let (_, ppid) = cpu_ticks(pid).unwrap();
        assert!(ppid > 0);
        let watch = CpuWatch::new(Path::new("/nonexistent"));
        let before = watch.snapshot();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let cores = before.cores_until(&watch.snapshot());
        assert!(cores.contains_key("bench"));
    }
}
