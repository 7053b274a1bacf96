//! Service binaries as child processes: a free port to give them, the stack's environment, a
//! guard that stops them (SIGTERM, then SIGKILL) when a test ends or fails, and a wait for
//! their `/healthz`.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::stack::VARIABLES;

/// A TCP port free at the time of the call on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A command running `binary` with the stack's variables that are set (inherited explicitly,
/// so a test can see what the child gets) and `RUST_LOG=warn` unless the test sets its own.
pub fn service_command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    for name in VARIABLES {
        if let Ok(value) = std::env::var(name) {
            command.env(name, value);
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    command
}

/// A child process stopped when dropped: SIGTERM, up to 10 s to exit, then SIGKILL.
pub struct Service {
    /// The process.
    pub child: Child,
}

impl Service {
    /// Spawns `command`.
    pub fn spawn(command: &mut Command) -> Service {
        Service {
            child: command
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {command:?}: {e}")),
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (up to 60 s) for the process to exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal_term(self.child.id());
        crate::wait::eventually_blocking(
            "the service to exit after SIGTERM",
            Duration::from_secs(60),
            || self.child.try_wait().expect("wait for the child"),
        )
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.running() {
            return;
        }
        signal_term(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

fn signal_term(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Waits until `GET {base}/healthz` answers 2xx, failing early if `service` exits.
pub async fn wait_healthy(base: &str, service: &mut Service, timeout: Duration) {
    let http = reqwest::Client::new();
    let url = format!("{base}/healthz");
    crate::wait::eventually(&format!("{url} to answer"), timeout, || {
        if let Ok(Some(status)) = service.child.try_wait() {
            panic!("the service exited ({status}) before {url} answered");
        }
        let request = http.get(&url).timeout(Duration::from_secs(5)).send();
        async move {
            request
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(())
        }
    })
    .await;
}
