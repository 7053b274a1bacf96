//! The read API under closed-loop load: by id, a customer's orders (both from PostgreSQL) and
//! search (Elasticsearch, skipped when the order-search projector did not run), against a read
//! API started for the stage over the run's schema and indices, kept running for the
//! end-to-end stage.

use std::sync::Arc;

use super::{under_load, Bench, Launch};
use crate::data;
use crate::load::{Judge, MakeRequest, Spec};
use crate::report::{Row, State};

/// The stage's name in the table.
pub const STAGE: &str = "read api";

/// Starts the read API and measures each read.
pub async fn run(b: &mut Bench) {
    let checks = [
        ("read.by_id", "GET /orders/{id}"),
        ("read.list", "GET /customers/{id}/orders"),
        ("read.search", "GET /search/orders?q=…"),
    ];
    if let Some(reason) = b.not_built("factline-read-api") {
        let reason = format!("{reason} (not landed yet?)");
        b.not_run_all(STAGE, checks, State::Skipped, &reason);
        return;
    }
    if let Err(e) = start_read_api(b).await {
        b.not_run_all(STAGE, checks, State::Failed, &e);
        return;
    }
    let pg_orders = (b.s.pg_events / data::EVENTS_PER_ORDER).max(1);
    let es_customers = b.es_data.customers();
    let pg_customers = b.pg_data.customers();
    let words = ["tea", "teapot", "beans", "matcha", "Customer"];
    let have_search_index = b.rate("projector.order_search").is_some();
    for (key, label) in checks {
        if key == "read.search" && !have_search_index {
            b.skip(
                STAGE,
                key,
                label,
                "no order_search index: the order-search projector did not run".into(),
            );
            continue;
        }
        let data = b.pg_data.clone();
        let make: MakeRequest = match key {
            "read.by_id" => Arc::new(move |client, seq| {
                let i = (seq.wrapping_mul(2_654_435_761) + client as u64 * 7919) % pg_orders;
                Spec::get(format!("/orders/{}", data.order_id(i)))
            }),
            "read.list" => Arc::new(move |client, seq| {
                let c = (seq.wrapping_mul(40_503) + client as u64) % pg_customers;
                Spec::get(format!("/customers/{}/orders", data.customer_id(c)))
            }),
            _ => Arc::new(move |client, seq| {
                let _ = es_customers;
                let word = words[((seq + client as u64) % words.len() as u64) as usize];
                Spec::get(format!("/search/orders?q={word}"))
            }),
        };
        let judge: Judge = Arc::new(|status, _| u64::from(status == 200));
        let Some(addr) = b.read_api.as_ref().map(|s| s.addr) else {
            return;
        };
        let clients = if key == "read.search" {
            b.s.search_clients
        } else {
            b.s.clients
        };
        let (result, cores) = b.closed_loop(addr, clients, make, judge).await;
        match result {
            Ok(r) => {
                let row = Row::ok(
                    STAGE,
                    key,
                    &format!("{label}, {clients} clients"),
                    "requests/s",
                    r.ok as f64 / r.elapsed.as_secs_f64().max(1e-9),
                );
                let mut row = under_load(row, r.ok, r, cores);
                if row.count == Some(0) {
                    row.state = State::Failed;
                    row.reason = Some(format!("no request answered 200: {:?}", row.failures));
                }
                b.push(row);
            }
            Err(e) => b.fail(STAGE, key, label, &e.into()),
        }
    }
    if let Some(service) = b.read_api.as_mut() {
        let kb = service.sample_memory();
        b.remember_memory("read-api", kb);
    }
}

/// Starts the read API over the run's schema and indices and keeps it in `b.read_api` (for
/// this stage and the end-to-end one).
pub(crate) async fn start_read_api(b: &mut Bench) -> Result<(), String> {
    let extra_env = vec![
        ("READ_API_INDEX_PREFIX".into(), b.prefix("e")),
        // the end-to-end stage waits up to 30 s per tracked command (wait_ms=30000)
        ("READ_API_CONSISTENCY_TIMEOUT_MS".into(), "30000".into()),
    ];
    let launch = Launch {
        name: "read-api",
        binary: "factline-read-api",
        args: Vec::new(),
        env_prefix: "READ_API",
        topic_prefix: &b.prefix("p"),
        health: "/healthz",
        extra_env,
    };
    let service = b.start(launch).await.map_err(|e| e.to_string())?;
    b.cpu.add("read-api", service.pid(), false);
    b.read_api = Some(service);
    Ok(())
}
