//! The read API under closed-loop load: by id, a customer's orders (both from PostgreSQL) and
//! search (Elasticsearch, skipped when the order-search projector did not run), against a read
//! API started for the stage over the run's schema and indices, kept running for the
//! end-to-end stage.

use std::sync::Arc;
use std::time::Duration;

use super::Bench;
use crate::data;
use crate::error::BenchError;
use crate::load::{self, Judge, MakeRequest, Spec};
use crate::report::{Row, State};
use crate::services::{free_addr, Service};

/// The stage's name in the table.
pub const STAGE: &str = "read api";

/// Starts the read API and measures each read.
pub async fn run(b: &mut Bench) {
    let checks = [
        ("read.by_id", "GET /orders/{id}"),
        ("read.list", "GET /customers/{id}/orders"),
        ("read.search", "GET /search/orders?q=…"),
    ];
    if b.binaries.find("factline-read-api").is_none() {
        for (key, label) in checks {
            b.skip(
                STAGE,
                key,
                label,
                format!(
                    "factline-read-api not built in {} (not landed yet?)",
                    b.binaries.dir.display()
                ),
            );
        }
        return;
    }
    let addr = match free_addr() {
        Ok(a) => a,
        Err(e) => return b.fail(STAGE, "read.by_id", "read api", &e.into()),
    };
    let mut env = b.common_env();
    env.push(("READ_API_ADDR".into(), addr.to_string()));
    env.push(("READ_API_TOPIC_PREFIX".into(), b.prefix("p")));
    env.push(("READ_API_INDEX_PREFIX".into(), b.prefix("e")));
    // the end-to-end stage waits up to 30 s per tracked command (wait_ms=30000)
    env.push(("READ_API_CONSISTENCY_TIMEOUT_MS".into(), "30000".into()));
    env.push((
        "READ_API_DECLARATIVE_DIR".into(),
        b.args
            .repo_root
            .join("projectors/config")
            .display()
            .to_string(),
    ));
    let service = match Service::start(
        &b.binaries,
        "read-api",
        "factline-read-api",
        &[],
        addr,
        "/healthz",
        &env,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let e = BenchError::from(e);
            for (key, label) in checks {
                b.fail(STAGE, key, label, &e);
            }
            return;
        }
    };
    b.cpu.add("read-api", service.pid(), false);
    b.read_api = Some(service);
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
        let cpu = b.cpu.snapshot();
        let result = load::closed_loop(
            addr,
            clients,
            Duration::from_secs_f64(b.s.warmup_seconds),
            Duration::from_secs_f64(b.s.seconds),
            make,
            judge,
        )
        .await;
        let cores = cpu.cores_until(&b.cpu.snapshot());
        match result {
            Ok(r) => {
                let mut row = Row::ok(
                    STAGE,
                    key,
                    &format!("{label}, {clients} clients"),
                    "requests/s",
                    r.ok as f64 / r.elapsed.as_secs_f64().max(1e-9),
                )
                .measured(r.ok, r.elapsed.as_secs_f64())
                .latency(r.ms(0.5), r.ms(0.99), r.ms(0.999));
                if r.ok == 0 {
                    row.state = State::Failed;
                    row.reason = Some(format!("no request answered 200: {:?}", r.failures));
                }
                row.failures = r.failures;
                row.cpu_cores = cores;
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
