//! What the CLI's tests share: the read API's end-to-end world (a write side, projectors and a
//! read API in the test process, on the test's own topics, schema and indices; the very module
//! the read API's tests use) and running the `factline` binary against it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
#[path = "../../../tests/common/mod.rs"]
pub mod common;
pub mod tally;

use std::time::Duration;

pub use common::*;
use serde_json::Value;

/// What one run of `factline` gave.
#[derive(Debug)]
pub struct Run {
    /// The exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Standard output as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// A `factline` command pointed at `world`'s services (flags, as an operator would override
/// the environment), Kafka and PostgreSQL from the stack's variables.
pub fn command(world: &World, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_factline"));
    command
        .args(["--read-api", &world.read, "--write-side", &world.write])
        .args(["--database-url", &world.database_url])
        .args(args)
        .env_remove("FACTLINE_READ_API_URL")
        .env_remove("FACTLINE_WRITE_SIDE_URL")
        .kill_on_drop(true);
    command
}

/// Runs `factline ARGS` against `world` to its end (at most two minutes).
pub async fn factline(world: &World, args: &[&str]) -> Run {
    finish(command(world, args), args).await
}

/// Runs a prepared `factline` command to its end (at most two minutes).
pub async fn finish(mut command: tokio::process::Command, args: &[&str]) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap_or_else(|_| panic!("factline {args:?} did not finish in two minutes"))
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A `factline` run still going, read line by line (`events tail`, `rebuild watch`).
pub struct Following {
    /// The process.
    pub child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Following {
    /// Starts `factline ARGS` against `world`.
    pub fn start(world: &World, args: &[&str]) -> Following {
        let mut command = command(world, args);
        command.stdout(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        Following {
            child,
            lines: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
        }
    }

    /// The next line of its output (waiting at most 60 s), or `None` at its end.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("factline printed a line within 60 s")
            .unwrap()
    }

    /// Waits (at most 60 s) for it to exit; whether it succeeded.
    pub async fn success(mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("factline exited within 60 s")
            .unwrap()
            .success()
    }
}

/// Runs `factline ARGS` until `done` holds for its run (at most 60 s).
pub async fn factline_until(world: &World, args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let run = factline(world, args).await;
        if done(&run) {
            return run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "factline {args:?} never matched; last: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every projector of `world` reports no lag.
pub async fn caught_up(world: &World) {
    world
        .eventually("/projections", |_, body| {
            let projections = body["projections"].as_array().cloned().unwrap_or_default();
            !projections.is_empty()
                && projections.iter().all(|p| {
                    p["versions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|v| v["lag_events"] == 0)
                })
        })
        .await;
}
