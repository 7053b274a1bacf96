//! The shipped binary refuses to start with a librdkafka override that would weaken "202 means
//! the event is durably on the log" (`KAFKA_PROPERTY_ACKS=1`, idempotence off, ...), exiting
//! non-zero with a message naming the variable, before it listens or touches the broker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with `extra` environment variables; returns its exit status and stderr.
fn run_binary(extra: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_factline-write-side"));
    command
        .env("WRITE_SIDE_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn the write side");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the write side did not exit with {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

#[test]
fn the_binary_refuses_durability_weakening_overrides_naming_the_variable() {
    for (variable, value) in [
        ("KAFKA_PROPERTY_ACKS", "1"),
        ("KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "false"),
        ("KAFKA_PROPERTY_MAX_IN_FLIGHT_REQUESTS_PER_CONNECTION", "10"),
    ] {
        let (status, stderr) = run_binary(&[(variable, value)]);
        assert!(!status.success(), "{variable}={value} started: {stderr}");
        assert!(
            stderr.contains(variable),
            "{variable}={value}: the message does not name the variable: {stderr}"
        );
    }
}
