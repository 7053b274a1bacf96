//! Traces from command to read model, against the real servers: with an OTLP endpoint
//! configured (oteltap from PyPI, an OTLP/HTTP receiver printing every span as NDJSON), one
//! command's trace holds the write side's `factline.command` and `factline.produce` spans, a
//! `factline.apply` span of every projector consuming its topic, and the read API's
//! `factline.query` for a read sent with the command's `traceparent`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// oteltap listening on a free port, its output lines gathered.
struct Receiver {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Receiver {
    fn start() -> Receiver {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let oteltap = root.join(".dev/venv/bin/oteltap");
        assert!(
            oteltap.exists(),
            "{} is missing: `make test` installs it (or `.dev/venv/bin/pip install oteltap`)",
            oteltap.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(oteltap)
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(line);
            }
        });
        Receiver { child, lines, port }
    }

    fn spans(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A span's string attribute.
fn attribute(span: &Value, key: &str) -> Option<String> {
    span["attributes"].as_array()?.iter().find_map(|a| {
        (a["key"] == key).then(|| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
    })
}

fn trace_id(span: &Value) -> String {
    span["traceId"]
        .as_str()
        .or_else(|| span["trace_id"].as_str())
        .unwrap_or_default()
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_commands_trace_reaches_every_projector_and_the_read() {
    let receiver = Receiver::start();
    // the endpoint as an operator configures it; then the services' logging set-up exports
    std::env::set_var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", receiver.port),
    );
    std::env::set_var("OTEL_SERVICE_NAME", "factline-traces-test");
    factline_service::logging::init_with(factline_service::logging::LogFormat::Text);
    assert!(factline_service::traces::enabled());

    let projectors = [
        Projector::OrderSummary,
        Projector::CustomerStats,
        Projector::OrderSearch,
        Projector::EventIndex,
    ];
    let world = World::start(&projectors, |_| {}).await;
    let id = unique("o-traced");
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{client_trace}-b7ad6b7169203331-01");
    let response = world
        .http
        .post(format!("{}/commands/PlaceOrder", world.write))
        .header("traceparent", &traceparent)
        .json(&order(&id, "c-traced", "Assam", 1, 300))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    let position = answer["position"].as_str().unwrap().to_owned();
    let read = world
        .http
        .get(format!(
            "{}/orders/{id}?consistent_with={position}",
            world.read
        ))
        .header("traceparent", &traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);

    let expected: BTreeSet<String> = [
        "order_summary",
        "customer_stats",
        "order_search",
        "event_index",
    ]
    .map(String::from)
    .into();
    let spans = factline_testkit::eventually("the trace's spans", WAIT, || async {
        factline_service::traces::flush();
        let spans: Vec<Value> = receiver
            .spans()
            .into_iter()
            .filter(|s| trace_id(s) == client_trace)
            .collect();
        let names: BTreeSet<String> = spans
            .iter()
            .filter_map(|s| s["name"].as_str().map(str::to_owned))
            .collect();
        let applied: BTreeSet<String> = spans
            .iter()
            .filter(|s| s["name"] == "factline.apply")
            .filter_map(|s| attribute(s, "projector"))
            .collect();
        (["factline.command", "factline.produce", "factline.query"]
            .iter()
            .all(|n| names.contains(*n))
            && applied == expected)
            .then_some(spans)
    })
    .await;
    // the apply spans are children of the produce span, as the record's traceparent says
    let produce = spans
        .iter()
        .find(|s| s["name"] == "factline.produce")
        .unwrap();
    for apply in spans.iter().filter(|s| s["name"] == "factline.apply") {
        assert_eq!(apply["parentSpanId"], produce["spanId"], "{apply}");
        assert_eq!(
            attribute(apply, "messaging.operation.type").as_deref(),
            Some("process")
        );
    }
    world.stop().await;
}
