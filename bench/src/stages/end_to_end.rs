//! End-to-end visibility at fixed offered loads: `PlaceOrder` commands sent open loop to a
//! write side started for the stage, and for a sample of the accepted ones one read of the
//! order through the read API with the `202`'s position (`consistent_with`), timed from the
//! `202` to the `200`. Needs the `order_summary` projector and the read API left running by the
//! stages before (the read API is started here when its own stage was not selected).
//!
//! The backlog the catch-up stages read is deleted from the broker first (`DeleteRecords` up
//! to its end, as retention would; the topics, offsets and read models stay): the local
//! broker, noida-db, saves its whole state after writes, so with a million records held every
//! produce of this stage waited for a save of hundreds of megabytes (p99 134–179 ms at 1k
//! commands/s, against 70–84 ms with 300k), which no Kafka broker does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::write_side::{accepted_judge, start_write_side, stop_write_side};
use super::Bench;
use crate::data::Dataset;
use crate::load::{self, MakeRequest, OnAccepted, Spec};
use crate::report::{Row, State};

/// The stage's name in the table.
pub const STAGE: &str = "end to end";

/// Measures visibility at each offered rate.
pub async fn run(b: &mut Bench) {
    let rates = b.s.e2e_rates.clone();
    let key_of = |rate: f64| format!("e2e.{}", rate as u64);
    let label_of = |rate: f64| format!("202 -> GET /orders/{{id}} = 200 at {} cmd/s", rate as u64);
    if b.read_api.is_none() && b.binaries.find("factline-read-api").is_some() {
        // the read API stage was not selected (`--stages`)
        if let Err(e) = super::read_api::start_read_api(b).await {
            eprintln!("[bench] starting the read API for the end-to-end stage failed: {e}");
        }
    }
    let reason = if b.binaries.find("factline-write-side").is_none() {
        Some("factline-write-side not built".to_owned())
    } else if b.order_summary.is_none() {
        Some("the order-summary projector is not running (see projectors)".to_owned())
    } else if b.read_api.is_none() {
        Some("the read API is not running (factline-read-api not built or failed)".to_owned())
    } else {
        None
    };
    let rows = || rates.iter().map(|&rate| (key_of(rate), label_of(rate)));
    if let Some(reason) = reason {
        b.not_run_all(STAGE, rows(), State::Skipped, &reason);
        return;
    }
    let prefix = b.prefix("p");
    if let Some(deleted) = b.delete_records(&prefix).await {
        eprintln!(
            "[bench] {deleted} records of the catch-up backlog deleted (DeleteRecords to the end, \
             as retention would) before the end-to-end stage"
        );
    }
    let mut service = match start_write_side(b, "write-side-e2e", &prefix).await {
        Ok(s) => s,
        Err(e) => {
            b.not_run_all(STAGE, rows(), State::Failed, &e);
            return;
        }
    };
    if let Some(p) = b.order_summary.as_ref() {
        b.cpu.add("order-summary", p.pid(), false);
    }
    let Some(read_addr) = b.read_api.as_ref().map(|s| s.addr) else {
        return;
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default();
    for rate in rates {
        let data = Dataset::new(&format!("{}x{}", b.run, rate as u64), 1000);
        let every = ((rate / b.s.e2e_tracked_per_second).ceil() as u64).max(1);
        let visible = Arc::new(Mutex::new(load::histogram()));
        let missing = Arc::new(Mutex::new(0u64));
        let first_miss: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let pollers = Arc::new(Mutex::new(Vec::new()));
        let make: MakeRequest = {
            let data = data.clone();
            Arc::new(move |_, seq| {
                Spec::post(
                    "/commands/PlaceOrder".into(),
                    data.place_order_command(seq).to_string().into_bytes(),
                )
            })
        };
        let on_accepted: OnAccepted = {
            let (visible, missing, first_miss, pollers, http, data) = (
                visible.clone(),
                missing.clone(),
                first_miss.clone(),
                pollers.clone(),
                http.clone(),
                data.clone(),
            );
            Arc::new(move |seq, body: &Bytes, accepted_at| {
                if seq % every != 0 {
                    return;
                }
                // One read per tracked command: the read API answers once the projection has
                // passed the command's position (read-your-writes), so the stage adds one
                // request per tracked command instead of a polling storm.
                let position = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("position")?.as_str().map(str::to_owned));
                let Some(position) = position else {
                    if let Ok(mut m) = missing.lock() {
                        *m += 1;
                    }
                    return;
                };
                let url = format!(
                    "http://{read_addr}/orders/{}?consistent_with={position}&wait_ms=30000",
                    data.order_id(seq)
                );
                let (visible, missing, first_miss, http) = (
                    visible.clone(),
                    missing.clone(),
                    first_miss.clone(),
                    http.clone(),
                );
                let handle = tokio::spawn(async move {
                    let miss = match http.get(&url).send().await {
                        Ok(r) if r.status().as_u16() == 200 => None,
                        Ok(r) => Some(format!(
                            "{} {}",
                            r.status().as_u16(),
                            r.text().await.unwrap_or_default()
                        )),
                        Err(e) => Some(e.to_string()),
                    };
                    match miss {
                        None => {
                            let us = accepted_at.elapsed().as_micros() as u64;
                            if let Ok(mut h) = visible.lock() {
                                let _ = h.record(us.max(1));
                            }
                        }
                        Some(miss) => {
                            if let Ok(mut m) = missing.lock() {
                                *m += 1;
                            }
                            if let Ok(mut f) = first_miss.lock() {
                                f.get_or_insert(miss);
                            }
                        }
                    }
                });
                if let Ok(mut p) = pollers.lock() {
                    p.push(handle);
                }
            })
        };
        let connections = ((rate / 50.0).ceil() as usize).clamp(8, 256);
        b.settle("end to end").await;
        let cpu = b.cpu.snapshot();
        let result = load::open_loop(
            service.addr,
            rate,
            Duration::from_secs_f64(b.s.e2e_seconds),
            connections,
            make,
            accepted_judge(),
            on_accepted,
        )
        .await;
        let handles: Vec<_> = pollers
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for h in handles {
            let _ = h.await;
        }
        let cores = cpu.cores_until(&b.cpu.snapshot());
        service.sample_memory();
        let (key, label) = (key_of(rate), label_of(rate));
        match result {
            Ok(r) => {
                let h = visible
                    .lock()
                    .map(|h| h.clone())
                    .unwrap_or_else(|_| load::histogram());
                let missing = missing.lock().map(|m| *m).unwrap_or_default();
                let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
                let mut row = Row::ok(STAGE, &key, &label, "commands/s", r.items_per_second())
                    .measured(r.items, r.elapsed.as_secs_f64())
                    .latency(q(0.5), q(0.99), q(0.999))
                    .cpu(cores)
                    .note(format!(
                        "offered {rate:.0} cmd/s open loop, the catch-up backlog deleted first; visibility of {} tracked commands (1 in {every}, each read once with consistent_with){}; command 202 latency p50 {:.2} ms, p99 {:.2} ms",
                        h.len(),
                        match first_miss.lock().ok().and_then(|f| f.clone()) {
                            Some(first) if missing > 0 => format!(", {missing} NOT visible within 30 s (first: {first})"),
                            _ if missing > 0 => format!(", {missing} without a position in the 202"),
                            _ => String::new(),
                        },
                        r.ms(0.5),
                        r.ms(0.99)
                    ));
                if h.is_empty() {
                    row.state = State::Failed;
                    row.reason = Some(format!(
                        "no tracked command became visible; failures {:?}",
                        r.failures
                    ));
                }
                row.failures = r.failures;
                b.push(row);
            }
            Err(e) => b.fail(STAGE, &key, &label, &e.into()),
        }
    }
    stop_write_side(b, "write-side-e2e", service).await;
}
