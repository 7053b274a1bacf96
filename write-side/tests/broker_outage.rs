//! The broker stops in the middle of a stream of commands: answers turn into 503 (with
//! Retry-After) within a bounded time, no request hangs, and after the broker is back every
//! command that got a 202 is on its topic.
//!
//! The broker stopped is the test's own: a noida-db started by `scripts/stack.sh start noida`
//! on free ports with its own data directory, so nothing else using the shared stack (other
//! tests, a `make up` beside them) sees the outage. Against another broker (for example the
//! one of `docker-compose.yml`), set `KAFKA_STOP_COMMAND` and `KAFKA_START_COMMAND` (shell
//! strings) that stop and start the broker at `KAFKA_BROKERS`. A drop guard restarts the broker
//! and stops the test's own noida-db even when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn shell(command: &str) {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The broker the test may stop: its stop and start commands, and for the test's own
/// noida-db, the command that stops it for good and the directory to remove.
struct Broker {
    stop: String,
    start: String,
    teardown: Option<(String, PathBuf)>,
}

impl Broker {
    /// The broker named by `KAFKA_STOP_COMMAND`/`KAFKA_START_COMMAND`, or a noida-db of the
    /// test's own, whose address then becomes `KAFKA_BROKERS` for this test binary.
    fn start() -> Broker {
        if let (Ok(stop), Ok(start)) = (
            std::env::var("KAFKA_STOP_COMMAND"),
            std::env::var("KAFKA_START_COMMAND"),
        ) {
            return Broker {
                stop,
                start,
                teardown: None,
            };
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|t| if t.is_absolute() { t } else { root.join(t) })
            .unwrap_or_else(|| root.join("target"));
        let dir = target
            .join("broker-outage")
            .join(Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let (kafka, elasticsearch) = (free_port(), free_port());
        // the variables scripts/stack.sh reads, naming this run's noida-db only (a noida-db
        // whatever the shared stack's BROKER is: the test stops its Kafka service)
        let stack = format!(
            "env -u STARTED_FILE -u NOIDA_DATA_DIR -u KAFKA_BROKERS -u ELASTICSEARCH_URL -u BROKER FACTLINE_DEV_DIR='{}' KAFKA_PORT={kafka} \
             ES_PORT={elasticsearch} '{}/scripts/stack.sh'",
            dir.display(),
            root.display()
        );
        let mut broker = Broker {
            stop: String::new(),
            start: String::new(),
            teardown: Some((format!("{stack} stop noida"), dir.clone())),
        };
        shell(&format!("{stack} start noida"));
        let noida = format!(
            "'{}' {{}} kafka --data-dir '{}'",
            env("NOIDA_BIN"),
            dir.join("noida").display()
        );
        // this test binary runs this one test: nothing else reads the environment meanwhile
        std::env::set_var("KAFKA_BROKERS", format!("127.0.0.1:{kafka}"));
        broker.stop = noida.replace("{}", "stop");
        broker.start = noida.replace("{}", "start");
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some((stop, dir)) = self.teardown.take() {
            let result = std::process::Command::new("sh")
                .arg("-c")
                .arg(&stop)
                .status();
            eprintln!("the test's noida-db stopped: {result:?}");
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the broker; starts it again on `restore` or, at the latest, on drop.
struct BrokerOutage {
    start: String,
    down: bool,
}

impl BrokerOutage {
    fn begin(broker: &Broker) -> BrokerOutage {
        shell(&broker.stop);
        BrokerOutage {
            start: broker.start.clone(),
            down: true,
        }
    }

    fn restore(&mut self) {
        if self.down {
            self.down = false;
            shell(&self.start);
        }
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if self.down {
            self.down = false;
            // Never panic in drop: report and go on.
            let result = std::process::Command::new("sh")
                .arg("-c")
                .arg(&self.start)
                .status();
            eprintln!("broker restored by the drop guard: {result:?}");
        }
    }
}

/// A condition on the answers so far.
type Predicate = Box<dyn Fn(&[Answer]) -> bool + Send>;

#[derive(Debug, Clone)]
struct Answer {
    sent_at: Instant,
    elapsed: Duration,
    key: String,
    body: Value,
    status: Option<u16>,
    retry_after: bool,
    answer: Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_turns_into_503_and_every_202_survives() {
    let broker = Broker::start();
    let message_timeout_ms = 3_000;
    let app = Arc::new(TestApp::start(|c| c.message_timeout_ms = message_timeout_ms).await);
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let running = Arc::new(AtomicBool::new(true));
    let run = Uuid::new_v4().simple().to_string();
    let client = reqwest::Client::builder()
        // A request that waits longer than this has hung: the test fails on it.
        .timeout(Duration::from_millis(message_timeout_ms + 15_000))
        .build()
        .unwrap();

    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (app, answers, running, client, run) = (
                app.clone(),
                answers.clone(),
                running.clone(),
                client.clone(),
                run.clone(),
            );
            tokio::spawn(async move {
                let mut n = 0;
                while running.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("{run}-{worker}-{n}");
                    let body = json!({"order_id": format!("o-{key}"), "carrier": "DHL", "tracking_id": key});
                    let sent_at = Instant::now();
                    let result = client
                        .post(format!("{}/commands/ShipOrder", app.base))
                        .header("idempotency-key", &key)
                        .json(&body)
                        .send()
                        .await;
                    let (status, retry_after, answer) = match result {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after = response.headers().contains_key("retry-after");
                            (Some(status), retry_after, response.json().await.unwrap_or(Value::Null))
                        }
                        Err(error) => (None, false, json!(error.to_string())),
                    };
                    let failed = status != Some(202);
                    answers.lock().unwrap().push(Answer {
                        sent_at,
                        elapsed: sent_at.elapsed(),
                        key,
                        body,
                        status,
                        retry_after,
                        answer,
                    });
                    if failed {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            })
        })
        .collect();

    let wait_for = |what: &'static str, secs: u64, predicate: Predicate| {
        let answers = answers.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(secs);
            loop {
                if predicate(&answers.lock().unwrap()) {
                    return;
                }
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    wait_for(
        "20 accepted commands",
        30,
        Box::new(|a| a.iter().filter(|a| a.status == Some(202)).count() >= 20),
    )
    .await;

    let mut outage = BrokerOutage::begin(&broker);
    let stopped_at = Instant::now();
    // Bounded: within the delivery timeout plus a margin, answers are 503s.
    wait_for(
        "five 503 answers to requests sent after the broker stopped",
        (message_timeout_ms / 1000) + 20,
        Box::new(move |a| {
            a.iter()
                .filter(|a| a.sent_at > stopped_at && a.status == Some(503))
                .count()
                >= 5
        }),
    )
    .await;
    let first_503_after = {
        let a = answers.lock().unwrap();
        a.iter()
            .filter(|a| a.sent_at > stopped_at && a.status == Some(503))
            .map(|a| a.sent_at + a.elapsed - stopped_at)
            .min()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    outage.restore();
    let restarted_at = Instant::now();
    wait_for(
        "a 202 after the broker is back",
        60,
        Box::new(move |a| {
            a.iter()
                .any(|a| a.sent_at > restarted_at && a.status == Some(202))
        }),
    )
    .await;
    running.store(false, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let answers = answers.lock().unwrap().clone();

    // No request hung or failed at the transport level; only 202 and 503 with Retry-After.
    let mut accepted = Vec::new();
    let mut unknown = Vec::new();
    for a in &answers {
        match a.status {
            Some(202) => accepted.push(a),
            Some(503) => {
                assert!(a.retry_after, "503 without Retry-After: {}", a.answer);
                assert_eq!(a.answer["retryable"], true);
                if a.answer["event_id"].is_string() {
                    assert!(a.answer["detail"]
                        .as_str()
                        .unwrap()
                        .contains("may or may not"));
                    unknown.push(a);
                }
            }
            other => panic!("unexpected answer {other:?}: {}", a.answer),
        }
    }
    let busy = answers.iter().filter(|a| a.status == Some(503)).count();
    let slowest = |unknown: bool| {
        answers
            .iter()
            .filter(|a| a.status == Some(503) && a.answer["event_id"].is_string() == unknown)
            .map(|a| a.elapsed)
            .max()
            .unwrap_or_default()
    };
    let (slowest_refusal, slowest_unknown) = (slowest(false), slowest(true));
    eprintln!(
        "outage: {} requests, {} accepted, {busy} answered 503 ({} outcome unknown), first 503 \
         {first_503_after:?} after the stop, slowest refusal {slowest_refusal:?}, slowest unknown \
         outcome {slowest_unknown:?}, broker down for {:?}",
        answers.len(),
        accepted.len(),
        unknown.len(),
        restarted_at - stopped_at
    );

    // Every 202 is on the log.
    for a in &accepted {
        let record = read_at(
            a.answer["topic"].as_str().unwrap(),
            a.answer["partition"].as_i64().unwrap() as i32,
            a.answer["offset"].as_i64().unwrap(),
        )
        .await;
        assert_eq!(
            envelope(&record).event_id.to_string(),
            a.answer["event_id"].as_str().unwrap(),
            "accepted {} is not at its position",
            a.key
        );
    }
    // An unknown outcome is safely retried with the same key: same event id.
    for a in &unknown {
        let (status, _, answer) = app
            .post("ShipOrder", &a.body, &[("idempotency-key", &a.key)])
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["event_id"], a.answer["event_id"]);
    }
}
