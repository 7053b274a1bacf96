//! The write side under load: single commands (`POST /commands/PlaceOrder`) and batches
//! (`POST /commands`) from closed-loop clients against a write side started for the stage, each
//! judged against the raw producer measured in the limits stage. Also starts the write side
//! the end-to-end stage drives.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::Bench;
use crate::data::Dataset;
use crate::error::BenchError;
use crate::load::{self, Judge, MakeRequest, Spec};
use crate::report::Row;
use crate::services::{free_addr, Service};

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
    let addr = free_addr()?;
    let mut env = b.common_env();
    env.push(("WRITE_SIDE_ADDR".into(), addr.to_string()));
    env.push(("WRITE_SIDE_TOPIC_PREFIX".into(), prefix.to_owned()));
    let service = Service::start(
        &b.binaries,
        name,
        "factline-write-side",
        &[],
        addr,
        "/readyz",
        &env,
    )
    .await?;
    b.cpu.add("write-side", service.pid(), false);
    Ok(service)
}

/// Measures single commands, then batches.
pub async fn run(b: &mut Bench) {
    const SINGLE: &str = "write.single";
    const BATCH: &str = "write.batch";
    if b.binaries.find("factline-write-side").is_none() {
        let reason = format!(
            "factline-write-side not built in {}",
            b.binaries.dir.display()
        );
        b.skip(STAGE, SINGLE, "POST /commands/PlaceOrder", reason.clone());
        b.skip(STAGE, BATCH, "POST /commands (batch)", reason);
        return;
    }
    let prefix = b.prefix("w");
    let mut service = match start_write_side(b, "write-side", &prefix).await {
        Ok(s) => s,
        Err(e) => {
            b.fail(STAGE, SINGLE, "POST /commands/PlaceOrder", &e);
            b.fail(STAGE, BATCH, "POST /commands (batch)", &e);
            return;
        }
    };
    let produce = b.rate("limit.kafka_produce");
    let data = Dataset::new(&format!("{}w", b.run), 1000);
    let warmup = Duration::from_secs_f64(b.s.warmup_seconds);
    let seconds = Duration::from_secs_f64(b.s.seconds);

    let make: MakeRequest = {
        let data = data.clone();
        Arc::new(move |client, seq| {
            let i = seq * 100_000 + client as u64;
            Spec::post(
                "/commands/PlaceOrder".into(),
                data.place_order_command(i).to_string().into_bytes(),
            )
        })
    };
    let cpu = b.cpu.snapshot();
    let result = load::closed_loop(
        service.addr,
        b.s.write_clients,
        warmup,
        seconds,
        make,
        accepted_judge(),
    )
    .await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    service.sample_memory();
    match result {
        Ok(r) => {
            let mut row = Row::ok(
                STAGE,
                SINGLE,
                &format!("POST /commands/PlaceOrder, {} clients", b.s.write_clients),
                "commands/s",
                r.items_per_second(),
            )
            .measured(r.items, r.elapsed.as_secs_f64())
            .latency(r.ms(0.5), r.ms(0.99), r.ms(0.999))
            .ratio(produce.map(|p| ("kafka produce", p)));
            row.failures = r.failures;
            row.cpu_cores = cores;
            b.push(row);
        }
        Err(e) => b.fail(STAGE, SINGLE, "POST /commands/PlaceOrder", &e.into()),
    }

    let items = b.s.batch_items;
    let make: MakeRequest = {
        let data = data.clone();
        Arc::new(move |client, seq| {
            let base = 1_000_000_000 + (seq * 1024 + client as u64) * items as u64;
            let batch: Vec<Value> = (0..items as u64)
                .map(|k| json!({"command": "PlaceOrder", "body": data.place_order_command(base + k)}))
                .collect();
            Spec::post(
                "/commands".into(),
                Value::Array(batch).to_string().into_bytes(),
            )
        })
    };
    let cpu = b.cpu.snapshot();
    let result = load::closed_loop(
        service.addr,
        b.s.batch_clients,
        warmup,
        seconds,
        make,
        batch_judge(),
    )
    .await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    match result {
        Ok(r) => {
            let mut row = Row::ok(
                STAGE,
                BATCH,
                &format!("POST /commands, {} x {} commands", b.s.batch_clients, items),
                "commands/s",
                r.items_per_second(),
            )
            .measured(r.items, r.elapsed.as_secs_f64())
            .latency(r.ms(0.5), r.ms(0.99), r.ms(0.999))
            .ratio(produce.map(|p| ("kafka produce", p)))
            .note("latency is per batch request; items failed inside a 200 are not counted");
            row.failures = r.failures;
            row.cpu_cores = cores;
            b.push(row);
        }
        Err(e) => b.fail(STAGE, BATCH, "POST /commands (batch)", &e.into()),
    }
    b.stop_service("write-side", service).await;
}
