//! The write side under load: single commands (`POST /commands/PlaceOrder`) and batches
//! (`POST /commands`) from closed-loop clients against a write side started for the stage, each
//! judged against the raw producer measured in the limits stage ([`judge_against_producer`]:
//! that stage runs after this one, so this stage's broker holds no backlog yet); single
//! commands offered at a fixed rate (open loop), judged on their p99; then the same batches
//! against a write side producing personal fields in clear
//! (`WRITE_SIDE_ENCRYPT_PERSONAL_DATA=false`), which gives what encryption costs as a ratio.
//! Each measurement starts with the records of the one before deleted
//! ([`Bench::delete_records`]). Also starts the write side the end-to-end stage drives. The
//! stage's topics are deleted when it ends ([`Bench::delete_topics_now`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::{under_load, Bench, Launch};
use crate::data::Dataset;
use crate::error::BenchError;
use crate::load::{self, Judge, MakeRequest, Spec};
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
    start_write_side_with(b, name, prefix, Vec::new()).await
}

/// [`start_write_side`] with extra environment variables.
async fn start_write_side_with(
    b: &mut Bench,
    name: &str,
    prefix: &str,
    extra_env: Vec<(String, String)>,
) -> Result<Service, BenchError> {
    let service = b
        .start(Launch {
            name,
            binary: "factline-write-side",
            args: Vec::new(),
            env_prefix: "WRITE_SIDE",
            topic_prefix: prefix,
            health: "/readyz",
            extra_env,
        })
        .await?;
    b.cpu.add("write-side", service.pid(), false);
    Ok(service)
}

/// Stops a write side started by [`start_write_side`]; its peak memory is reported as
/// `memory_name` (the one that encrypts, the one in clear and end to end's apart).
pub(crate) async fn stop_write_side(b: &mut Bench, memory_name: &str, service: Service) {
    b.cpu.remove("write-side");
    let kb = service.stop().await;
    b.remember_memory(memory_name, kb);
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
        key: CLOSED_LOOP_KEYS[0],
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
        key: CLOSED_LOOP_KEYS[1],
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

/// Measures single commands, then batches, then batches with encryption off.
pub async fn run(b: &mut Bench) {
    let data = Dataset::new(&format!("{}w", b.run), 1000);
    measure_encryption_on(b, &data).await;
    measure_encryption_off(b, &data).await;
    b.delete_topics_now(&b.prefix("w")).await;
}

/// The batches again against a write side that produces personal fields in clear; the row's
/// ratio is the encrypting write side's batch rate to this one's.
async fn measure_encryption_off(b: &mut Bench, data: &Dataset) {
    const KEY: &str = "write.encryption";
    const SHORT: &str = "POST /commands, encryption cost";
    if let Some(reason) = b.not_built("factline-write-side") {
        b.not_run_all(STAGE, [(KEY, SHORT)], State::Skipped, &reason);
        return;
    }
    let Some(encrypted) = b.rate("write.batch") else {
        return b.not_run_all(
            STAGE,
            [(KEY, SHORT)],
            State::Skipped,
            &"the batch row did not run",
        );
    };
    let prefix = b.prefix("w");
    let off = vec![("WRITE_SIDE_ENCRYPT_PERSONAL_DATA".into(), "false".into())];
    let mut service = match start_write_side_with(b, "write-side", &prefix, off).await {
        Ok(s) => s,
        Err(e) => return b.not_run_all(STAGE, [(KEY, SHORT)], State::Failed, &e),
    };
    let m = batch(b, &Dataset::new(&format!("{}x", b.run), data.customers()));
    b.delete_records(&prefix).await;
    let (result, cores) = b
        .closed_loop(service.addr, m.clients, m.make, m.judge)
        .await;
    service.sample_memory();
    match result {
        Ok(r) => {
            let plain = r.items_per_second();
            let row = Row::ok(
                STAGE,
                KEY,
                &format!("{}, encryption on vs off", m.label),
                "commands/s",
                encrypted,
            )
            .ratio(Some(("the same batches, encryption off", plain)))
            .note(format!(
                "encryption on {encrypted:.0} cmd/s (the batch row above), off {plain:.0} cmd/s \
                 (WRITE_SIDE_ENCRYPT_PERSONAL_DATA=false); cpu and latency of the run without"
            ));
            b.push(under_load(row, r.items, r, cores));
        }
        Err(e) => b.fail(STAGE, KEY, SHORT, &e.into()),
    }
    // its peak memory apart from the write side that encrypts
    stop_write_side(b, "write-side-clear", service).await;
}

/// Single commands, then batches, with personal fields encrypted (the default).
async fn measure_encryption_on(b: &mut Bench, data: &Dataset) {
    let measurements = [single(b, data), batch(b, data)];
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
    // every measurement starts on empty topics (the closed loops after deleting the records
    // of the one before): noida-db saves its whole state after writes, so its stalls grow with
    // the records it holds (p99 12 ms here first, 51-62 ms after the closed loops had written
    // ~700k records)
    single_offered(b, &mut service).await;
    for m in measurements {
        b.delete_records(&prefix).await;
        let (result, cores) = b
            .closed_loop(service.addr, m.clients, m.make, m.judge)
            .await;
        service.sample_memory();
        match result {
            Ok(r) => {
                let mut row = Row::ok(STAGE, m.key, &m.label, "commands/s", r.items_per_second());
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

/// The closed-loop rows as a ratio of the raw producer, once the limits stage measured it.
pub fn judge_against_producer(b: &mut Bench) {
    let Some(produce) = b.rate("limit.kafka_produce") else {
        return;
    };
    for row in b.rows.iter_mut() {
        if row.stage == STAGE && CLOSED_LOOP_KEYS.contains(&row.key.as_str()) {
            row.set_ratio(Some(("kafka produce", produce)));
        }
    }
}

/// The keys of the closed-loop rows, judged against the raw producer.
const CLOSED_LOOP_KEYS: [&str; 2] = ["write.single", "write.batch"];

/// Single commands offered at a fixed rate (open loop), each its own order: the latency below
/// saturation, where the closed loop measures it at saturation. Latency is counted from each
/// command's scheduled time, so a command that waits for a free connection counts its wait.
async fn single_offered(b: &mut Bench, service: &mut Service) {
    const KEY: &str = "write.single_offered";
    let rate = b.s.single_rate;
    let label = format!("POST /commands/PlaceOrder at {rate:.0} commands/s offered");
    // the same customers in the warm-up and the measured run (a customer's first command
    // creates their data key: a write to PostgreSQL, once per customer), other orders: no
    // command is sent twice
    let data = Dataset::new(&format!("{}o", b.run), 1000);
    let orders = |first: u64| -> MakeRequest {
        let data = data.clone();
        Arc::new(move |_, seq| {
            Spec::post(
                "/commands/PlaceOrder".into(),
                data.place_order_command(first + seq)
                    .to_string()
                    .into_bytes(),
            )
        })
    };
    // as many connections as commands in flight at 20 ms each, as the end-to-end stage opens
    let connections = ((rate / 50.0).ceil() as usize).clamp(8, 256);
    let offer = |seconds: f64, make: MakeRequest| {
        let addr = service.addr;
        load::open_loop(
            addr,
            rate,
            Duration::from_secs_f64(seconds),
            connections,
            make,
            accepted_judge(),
            Arc::new(|_, _, _| {}),
        )
    };
    b.settle("single commands at an offered rate").await;
    // the warm-up's answers are not counted: it creates the customers' data keys (1000 new
    // customers at once took the first 0.4 s of answers to 55-60 ms each)
    let _ = offer(b.s.warmup_seconds, orders(1 << 40)).await;
    let (result, cores) = b.with_cpu(offer(b.s.seconds, orders(0))).await;
    service.sample_memory();
    match result {
        Ok(r) => {
            let row =
                Row::ok(STAGE, KEY, &label, "commands/s", r.items_per_second()).note(format!(
                    "open loop on {connections} connections; latency from each command's \
                     scheduled time"
                ));
            b.push(under_load(row, r.items, r, cores));
        }
        Err(e) => b.fail(STAGE, KEY, &label, &e.into()),
    }
}
