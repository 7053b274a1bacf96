//! The OpenAPI document matches the behaviour: `scripts/openapi-fuzz.sh` (schemathesis, every
//! check) against the write-side binary started as `scripts/services.sh` starts it — the
//! environment of `scripts/stack.sh env`, a listening address — on a free port. The only
//! addition is a topic prefix with its own topics, so the fuzzer's commands never reach the
//! shared `customers` and `orders` topics. Once without API keys (as `make up` runs it: no
//! security scheme), once with a key (the bearer scheme declared and enforced).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The write-side binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct Service {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: TempDir,
}

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("write-side-fuzz-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Service {
    /// Starts the binary with the inherited environment plus `extra`, and waits for `/healthz`.
    async fn start(extra: &[(&str, &str)]) -> Service {
        let prefix = common::new_prefix();
        common::create_topics(&prefix).await;
        let dir = TempDir::new();
        let log = dir.0.join("write-side.log");
        let addr = format!("127.0.0.1:{}", factline_testkit::process::free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_factline-write-side"));
        command
            .env("WRITE_SIDE_ADDR", &addr)
            .env("WRITE_SIDE_TOPIC_PREFIX", &prefix)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap());
        for (name, value) in extra {
            command.env(name, value);
        }
        let mut service = Service {
            child: command.spawn().expect("spawn the write side"),
            base: format!("http://{addr}"),
            log,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = http
                .get(format!("{}/healthz", service.base))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if matches!(&health, Ok(r) if r.status() == 200) {
                break;
            }
            if let Some(status) = service.child.try_wait().unwrap() {
                panic!("the write side exited ({status}):\n{}", service.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the write side did not become healthy:\n{}",
                service.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        service
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn openapi(&self) -> Value {
        reqwest::get(format!("{}/openapi.json", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Runs `scripts/openapi-fuzz.sh` against the service; panics with its output on failure.
    fn fuzz(&self, env: &[(&str, &str)], args: &[&str]) {
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = crate_dir.join("../scripts/openapi-fuzz.sh");
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .arg(&self.base)
            .args(args)
            .env(
                "OPENAPI_FUZZ_CONFIG",
                crate_dir.join("schemathesis.toml").as_os_str(),
            )
            // A safety net for a stuck run; a normal run takes well under a minute.
            .env("OPENAPI_FUZZ_TIMEOUT_SECS", "900")
            .stdin(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let output = command.output().expect("run scripts/openapi-fuzz.sh");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "schemathesis found failures ({}):\n{text}\n--- write side log (tail) ---\n{}",
            output.status,
            tail(&self.log_text(), 40)
        );
        assert!(text.contains("No issues found"), "{text}");
        println!("{text}");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_without_api_keys() {
    let service = Service::start(&[]).await;
    let doc = service.openapi().await;
    assert!(
        doc["components"].get("securitySchemes").is_none(),
        "no keys configured, yet the document declares a security scheme"
    );
    service.fuzz(&[], &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_failure_with_an_api_key() {
    let key = "fuzz-secret-key";
    let hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(key.as_bytes()))
    };
    let service = Service::start(&[("WRITE_SIDE_API_KEYS_SHA256", &hash)]).await;
    let doc = service.openapi().await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let authorization = format!("Authorization: Bearer {key}");
    service.fuzz(
        &[("OPENAPI_FUZZ_MAX_EXAMPLES", "40")],
        &["-H", &authorization],
    );
}
