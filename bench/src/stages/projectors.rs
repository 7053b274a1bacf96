//! The projectors catching up a backlog from process start: the two search projectors on the
//! Elasticsearch backlog (each stopped once caught up), then `order_summary` on the PostgreSQL
//! backlog, kept running for the read API and end-to-end stages. Each is judged against the
//! slower of raw Kafka consume and its sink's raw write measured in the limits stage. Before
//! that, `order_summary` catches up the same backlog with its personal fields encrypted (in
//! its own schema, produced by this stage and deleted once caught up), judged against the run
//! in clear: what decrypting costs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{Bench, Launch};
use crate::error::BenchError;
use crate::pg;
use crate::report::Row;
use crate::services::Service;

/// The stage's name in the table.
pub const STAGE: &str = "projectors";

/// The one projector binary, run as `factline-projector <projector>`.
const BINARY: &str = "factline-projector";

/// Starts a projector reading topics (and, for the search projectors, writing indices) under
/// `prefix`.
async fn start_projector(
    b: &mut Bench,
    name: &str,
    projector: &str,
    prefix: &str,
    database_url: &str,
) -> Result<Service, BenchError> {
    let mut extra_env = vec![("DATABASE_URL".to_owned(), database_url.to_owned())];
    if projector != "order_summary" {
        extra_env.push(("PROJECTOR_INDEX_PREFIX".into(), prefix.to_owned()));
    }
    b.start(Launch {
        name,
        binary: BINARY,
        args: vec![projector.to_owned()],
        env_prefix: "PROJECTOR",
        topic_prefix: prefix,
        health: "/healthz",
        extra_env,
    })
    .await
}

/// One projector catch-up to measure.
struct CatchUpJob<'a> {
    key: &'a str,
    label: &'a str,
    /// The process's name in logs and CPU figures.
    binary: &'a str,
    projector: &'a str,
    prefix: &'a str,
    /// Where it writes (the run's schema on the search path).
    database_url: String,
    ends: HashMap<(String, i32), i64>,
    limit: Option<(&'a str, f64)>,
}

/// Starts a projector and waits until its positions reach `ends`; returns the service (still
/// running) and its row.
async fn catch_up(b: &mut Bench, job: CatchUpJob<'_>) -> Option<Service> {
    let CatchUpJob {
        key,
        label,
        binary,
        projector,
        prefix,
        database_url,
        ends,
        limit,
    } = job;
    if let Some(reason) = b.not_built(BINARY) {
        b.skip(STAGE, key, label, format!("{reason} (not landed yet?)"));
        return None;
    }
    let total: i64 = ends.values().sum();
    b.settle(key).await;
    let cpu = b.cpu.snapshot();
    let started = Instant::now();
    let mut service = match start_projector(b, binary, projector, prefix, &database_url).await {
        Ok(s) => s,
        Err(e) => {
            b.fail(STAGE, key, label, &e);
            return None;
        }
    };
    b.cpu.add(binary, service.pid(), false);
    let timeout = Duration::from_secs(b.s.catch_up_timeout_secs);
    let pid = service.pid();
    let caught = pg::wait_caught_up(
        &database_url,
        projector,
        1,
        &ends,
        started,
        timeout,
        move || std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    service.sample_memory();
    match caught {
        Ok(c) => {
            let secs = c.elapsed.as_secs_f64();
            let mut row = Row::ok(STAGE, key, label, "events/s", total as f64 / secs)
                .measured(total as u64, secs)
                .ratio(limit)
                .cpu(cores);
            if let Some(first) = c.first_position {
                let steady = secs - first.as_secs_f64();
                let after = if steady >= 0.2 * secs {
                    format!("{:.0} events/s after it", total as f64 / steady)
                } else {
                    format!("the rest followed within {steady:.2} s")
                };
                row = row.note(format!(
                    "from process start; first batch committed after {:.1} s (start-up, group join); {after}",
                    first.as_secs_f64(),
                ));
            }
            b.push(row);
            Some(service)
        }
        Err(e) => {
            let error = BenchError::CatchUp {
                source: e,
                tail: service.log_tail(5),
            };
            b.fail(STAGE, key, label, &error);
            b.stop_service(binary, service).await;
            None
        }
    }
}

/// The limit a projector is judged against: the slower of raw Kafka consume and the raw write
/// of its sink (`sink` is that row's key), with the limit's name.
fn limit_of(b: &Bench, sink: &str, sink_name: &str) -> Option<(String, f64)> {
    let consume = b.rate("limit.kafka_consume")?;
    let sink_rate = b.rate(sink)?;
    Some(if consume <= sink_rate {
        ("kafka consume".to_owned(), consume)
    } else {
        (sink_name.to_owned(), sink_rate)
    })
}

/// The row of `order_summary` on the sealed backlog.
const SEALED_KEY: &str = "projector.order_summary_sealed";

/// Gives the sealed run's row its ratio to the same backlog in clear.
fn judge_sealed(b: &mut Bench) {
    let plain = b.rate("projector.order_summary");
    if let Some(row) = b.rows.iter_mut().find(|r| r.key == SEALED_KEY) {
        *row = row
            .clone()
            .ratio(plain.map(|p| ("the same backlog in clear", p)));
    }
}

/// Catches up the search projectors, then `order_summary` on the sealed backlog (stopped),
/// then on the backlog in clear (left running).
pub async fn run(b: &mut Bench) {
    // The search projectors first, stopped once caught up, so the PostgreSQL projector (kept
    // running for the read API and end-to-end stages) does not share the machine with them.
    let prefix = b.prefix("e");
    let all_ends = b.es_ends.clone();
    for (key, binary, projector, sink, sink_name) in [
        (
            "projector.order_search",
            "order-search",
            "order_search",
            "limit.es_bulk_order_search",
            "es _bulk order_search",
        ),
        (
            "projector.event_index",
            "event-index",
            "event_index",
            "limit.es_bulk_event_index",
            "es _bulk event_index",
        ),
    ] {
        let limit = limit_of(b, sink, sink_name);
        let total: i64 = all_ends.values().sum();
        let label = format!("{binary} (elasticsearch), {total} events backlog");
        let job = CatchUpJob {
            key,
            label: &label,
            binary,
            projector,
            prefix: &prefix,
            database_url: b.db_url.clone(),
            ends: all_ends.clone(),
            limit: limit.as_ref().map(|(n, v)| (n.as_str(), *v)),
        };
        if let Some(service) = catch_up(b, job).await {
            b.stop_service(binary, service).await;
        }
    }
    // the same backlog with its personal fields encrypted, into its own schema; stopped once
    // caught up, then judged against the run in clear below
    if let Err(e) = super::limits::produce_sealed_backlog(b).await {
        b.fail(
            STAGE,
            SEALED_KEY,
            "sealed backlog (personal fields encrypted)",
            &e,
        );
    }
    let sealed_label = format!(
        "order-summary (postgres), {} events backlog, personal fields encrypted",
        b.sealed_ends.values().sum::<i64>()
    );
    let sealed = if b.sealed_ends.is_empty() {
        None
    } else {
        let prefix = b.prefix("s");
        let job = CatchUpJob {
            key: SEALED_KEY,
            label: &sealed_label,
            // its own name: larger records than the run in clear, so its own peak memory
            binary: "order-summary-encrypted",
            projector: "order_summary",
            prefix: &prefix,
            database_url: b.sealed_db_url.clone(),
            ends: b.sealed_ends.clone(),
            limit: None,
        };
        catch_up(b, job).await
    };
    if let Some(service) = sealed {
        b.stop_service("order-summary-encrypted", service).await;
    }
    b.delete_topics_now(&b.prefix("s")).await;

    let prefix = b.prefix("p");
    let ends = b.pg_ends.clone();
    let limit = limit_of(b, "limit.pg_upsert", "postgres upsert");
    let label = format!(
        "order-summary (postgres), {} events backlog",
        ends.values().sum::<i64>()
    );
    b.order_summary = catch_up(
        b,
        CatchUpJob {
            key: "projector.order_summary",
            label: &label,
            binary: "order-summary",
            projector: "order_summary",
            prefix: &prefix,
            database_url: b.db_url.clone(),
            ends,
            limit: limit.as_ref().map(|(n, v)| (n.as_str(), *v)),
        },
    )
    .await;
    judge_sealed(b);

    if let Some(service) = b.order_summary.as_mut() {
        let kb = service.sample_memory();
        b.remember_memory("order-summary", kb);
    }
}
