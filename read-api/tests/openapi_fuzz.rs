//! The OpenAPI document matches the behaviour: `scripts/openapi-fuzz.sh` (schemathesis, every
//! check) against the read-API binary started as `scripts/services.sh` starts it — the
//! environment of `scripts/stack.sh env` and `READ_API_ADDR` on a free port — over read models
//! that exist. The only additions are this
//! test's isolation: its own PostgreSQL schema (in `DATABASE_URL`) and topic/index prefix, kept
//! by the projectors this test runs. Once without keys (as `make up` runs it: no security
//! scheme), once with a key (the bearer scheme declared and enforced).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};

/// The read-API binary, stopped (SIGTERM, then SIGKILL) when dropped.
struct Binary {
    child: Child,
    base: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

async fn start(world: &World, extra: &[(&str, &str)]) -> Binary {
    let addr = format!("127.0.0.1:{}", factline_testkit::process::free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_factline-read-api"));
    command
        .env("READ_API_ADDR", &addr)
        .env("DATABASE_URL", &world.database_url)
        .env("READ_API_TOPIC_PREFIX", &world.prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in extra {
        command.env(name, value);
    }
    let binary = Binary {
        child: command.spawn().unwrap(),
        base: format!("http://{addr}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let healthy = http
            .get(format!("{}/healthz", binary.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            return binary;
        }
        assert!(
            Instant::now() < deadline,
            "the read API never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fuzz(base: &str, max_examples: &str, extra: &[&str]) {
    let output = Command::new(root().join("scripts/openapi-fuzz.sh"))
        .arg(base)
        .args(extra)
        .env(
            "OPENAPI_FUZZ_CONFIG",
            root().join("read-api/schemathesis.toml"),
        )
        .env("OPENAPI_FUZZ_MAX_EXAMPLES", max_examples)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_behaviour() {
    let world = World::start(&Projector::ALL, |_| {}).await;
    let c = unique("c");
    let registered = world
        .command("RegisterCustomer", customer(&c, "Ada Lovelace"))
        .await;
    let placed = world
        .command(
            "PlaceOrder",
            order(&unique("o"), &c, "Earl Grey tea", 2, 450),
        )
        .await;
    let customers = registered["position"].as_str().unwrap();
    let orders = placed["position"].as_str().unwrap();
    // every read model exists and holds the writes before the fuzzer starts (until then some
    // answers are a documented 503 "not available yet")
    for (path, token) in [
        ("/customers/x/orders", orders),
        ("/search/orders", orders),
        ("/events", orders),
        ("/customers/x", orders),
        ("/customers/x", customers),
        ("/views/customer_directory", customers),
        ("/views/customer_search", customers),
    ] {
        let (status, _, body) = world.get(&format!("{path}?consistent_with={token}")).await;
        assert!(status == 200 || status == 404, "{path}: {status} {body}");
    }

    let binary = start(&world, &[]).await;
    fuzz(&binary.base, "60", &[]);
    drop(binary);

    let key = "fuzz-reader-key";
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let binary = start(&world, &[("READ_API_KEYS_SHA256", &hash)]).await;
    fuzz(
        &binary.base,
        "15",
        &["-H", &format!("Authorization: Bearer {key}")],
    );
    drop(binary);
    world.stop().await;
}
