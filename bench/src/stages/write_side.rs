//! The write side under load: single commands (`POST /commands/PlaceOrder`) and batches
//! (`POST /commands`) from closed-loop clients against a write side started for the stage, each
//! judged against the raw producer measured in the limits stage. Also starts the write side
//! the end-to-end stage drives.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{under_load, Bench, Launch};
use crate::data::Dataset;
use crate::error::BenchError;
use crate::load::{Judge, MakeRequest, Spec};
use crate::report::{Row, State};
use crate::services::Service;

/// The stage's name in the table.
pub const STAGE: &str = "write side";

/// Counts a `202 Accepted` as one command.
pub(crate) fn accepted_judge() -> Judge {
    Arc::new(|status, _| u64::from(status == 202))
}

/// Counts the commands a `200` batch answer says it accepted.
fn batch_judge() -> Judge {
    Arc::new(|status, body: &Bytes| {
        if status != 200 {
            return 0;
        }
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("accepted").and_then(Value::as_u64))
            .unwrap_or(0)
    })
}

/// Starts a write side producing under `prefix`, watched for CPU as `write-side`.
pub(crate) async fn start_write_side(
    b: &mut Bench,
    name: &str,
    prefix: &str,
) -> Result<Service, BenchError> {
    let service = b
        .start(Launch {
            name,
            binary: "factline-write-side",
            args: Vec::new(),
            env_prefix: "WRITE_SIDE",
            topic_prefix: prefix,
            health: "/readyz",
            extra_env: Vec::new(),
        })
        .await?;
    b.cpu.add("write-side", service.pid(), false);
    Ok(service)
}

/// One load on the write side.
struct Measurement {
    key: &'static str,
    /// Label of a row that did not run.
    short_label: &'static str,
    label: String,
    clients: usize,
    make: MakeRequest,
    judge: Judge,
    note: Option<&'static str>,
}

/// Single `PlaceOrder` commands, each its own order.
fn single(b: &Bench, data: &Dataset) -> Measurement {
    let data = data.clone();
    Measurement {
        key: "write.single",
        short_label: "POST /commands/PlaceOrder",
        label: format!("POST /commands/PlaceOrder, {} clients", b.s.write_clients),
        clients: b.s.write_clients,
        make: Arc::new(move |client, seq| {
            let i = seq * 100_000 + client as u64;
            Spec::post(
                "/commands/PlaceOrder".into(),
                data.place_order_command(i).to_string().into_bytes(),
            )
        }),
        judge: accepted_judge(),
        note: None,
    }
}

/// Batches of `PlaceOrder` commands.
fn batch(b: &Bench, data: &Dataset) -> Measurement {
    let data = data.clone();
    let items = b.s.batch_items;
    Measurement {
        key: "write.batch",
        short_label: "POST /commands (batch)",
        label: format!("POST /commands, {} x {} commands", b.s.batch_clients, items),
        clients: b.s.batch_clients,
        make: Arc::new(move |client, seq| {
            let base = 1_000_000_000 + (seq * 1024 + client as u64) * items as u64;
            let batch: Vec<Value> = (0..items as u64)
                .map(|k| json!({"command": "PlaceOrder", "body": data.place_order_command(base + k)}))
                .collect();
            Spec::post(
                "/commands".into(),
                Value::Array(batch).to_string().into_bytes(),
            )
        }),
        judge: batch_judge(),
        note: Some("latency is per batch request; items failed inside a 200 are not counted"),
    }
}

/// Measures single commands, then batches.
pub async fn run(b: &mut Bench) {
    let data = Dataset::new(&format!("{}w", b.run), 1000);
    let measurements = [single(b, &data), batch(b, &data)];
    let not_run = measurements.each_ref().map(|m| (m.key, m.short_label));
    if let Some(reason) = b.not_built("factline-write-side") {
        b.not_run_all(STAGE, not_run, State::Skipped, &reason);
        return;
    }
    let prefix = b.prefix("w");
    let mut service = match start_write_side(b, "write-side", &prefix).await {
        Ok(s) => s,
        Err(e) => {
            b.not_run_all(STAGE, not_run, State::Failed, &e);
            return;
        }
    };
    let produce = b.rate("limit.kafka_produce");
    for m in measurements {
        let (result, cores) = b
            .closed_loop(service.addr, m.clients, m.make, m.judge)
            .await;
        service.sample_memory();
        match result {
            Ok(r) => {
                let mut row = Row::ok(STAGE, m.key, &m.label, "commands/s", r.items_per_second())
                    .ratio(produce.map(|p| ("kafka produce", p)));
                if let Some(note) = m.note {
                    row = row.note(note);
                }
                b.push(under_load(row, r.items, r, cores));
            }
            Err(e) => b.fail(STAGE, m.key, m.short_label, &e.into()),
        }
    }
    b.stop_service("write-side", service).await;
}
