//! One bench run, stage by stage: the limits of the systems underneath (raw Kafka produce and
//! consume, Avro decode, raw PostgreSQL upsert, raw Elasticsearch `_bulk`), the write side,
//! the projectors catching up a backlog, the read API, and end-to-end visibility at fixed
//! offered loads. Each stage that needs a service binary that is not built is skipped with the
//! reason; a stage that fails is reported as failed and the run goes on.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use factline_projectors::projections::order_summary::OrderSummary;
use factline_schemas::EventCodec;
use serde_json::{json, Value};

use crate::config::{Args, Settings};
use crate::data::{self, Dataset, SampleEvent};
use crate::es::Es;
use crate::kafka::{self, EncodedRecord};
use crate::load::{self, Judge, MakeRequest, OnAccepted, Spec};
use crate::pg;
use crate::report::{Report, Row, State, Target};
use crate::services::{free_addr, Binaries, CpuWatch, Service};

const LIMITS: &str = "limits";
const WRITE: &str = "write side";
const PROJ: &str = "projectors";
const READ: &str = "read api";
const E2E: &str = "end to end";

type StageResult<T> = Result<T, String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Everything shared by the stages of one run.
struct Bench {
    args: Args,
    s: Settings,
    run: String,
    binaries: Binaries,
    cpu: CpuWatch,
    rows: Vec<Row>,
    memory_kb: BTreeMap<String, u64>,
    schema: String,
    db_url: String,
    topics: Vec<String>,
    es: Es,
    codec: EventCodec,
    pg_data: Dataset,
    es_data: Dataset,
    pg_ends: HashMap<(String, i32), i64>,
    es_ends: HashMap<(String, i32), i64>,
    order_summary: Option<Service>,
    read_api: Option<Service>,
}

impl Bench {
    fn prefix(&self, what: &str) -> String {
        format!("{}_{what}_", self.run)
    }

    fn push(&mut self, row: Row) {
        let line = match row.state {
            State::Ok => format!(
                "{} / {}: {} {}{}",
                row.stage,
                row.label,
                crate::report::human(row.rate.unwrap_or_default()),
                row.unit,
                row.p99_ms
                    .map_or(String::new(), |p| format!(", p99 {p:.2} ms"))
            ),
            _ => format!(
                "{} / {}: {:?} {}",
                row.stage,
                row.label,
                row.state,
                row.reason.clone().unwrap_or_default()
            ),
        };
        eprintln!("[bench] {line}");
        self.rows.push(row);
    }

    fn fail(&mut self, stage: &str, key: &str, label: &str, reason: String) {
        self.push(Row::not_run(stage, key, label, State::Failed, reason));
    }

    fn skip(&mut self, stage: &str, key: &str, label: &str, reason: String) {
        self.push(Row::not_run(stage, key, label, State::Skipped, reason));
    }

    fn rate(&self, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.key == key && r.state == State::Ok)
            .and_then(|r| r.rate)
    }

    fn remember_memory(&mut self, name: &str, kb: u64) {
        let entry = self.memory_kb.entry(name.to_owned()).or_default();
        *entry = (*entry).max(kb);
    }

    fn common_env(&self) -> Vec<(String, String)> {
        vec![
            ("KAFKA_BROKERS".into(), self.args.kafka_brokers.clone()),
            (
                "SCHEMA_REGISTRY_URL".into(),
                self.args.schema_registry_url.clone(),
            ),
            ("DATABASE_URL".into(), self.db_url.clone()),
            (
                "ELASTICSEARCH_URL".into(),
                self.args.elasticsearch_url.clone(),
            ),
        ]
    }
}

/// Runs every stage and returns the report (also written as JSON to `args.out`).
pub async fn run(args: Args) -> Report {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let s = args.settings();
    let run = format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let logs = args
        .out
        .parent()
        .map_or_else(|| PathBuf::from("logs"), |p| p.join("logs"));
    let mut bench = Bench {
        binaries: Binaries {
            dir: args.bin_dir.clone(),
            logs,
        },
        cpu: CpuWatch::new(&args.repo_root.join(".dev/run")),
        rows: Vec::new(),
        memory_kb: BTreeMap::new(),
        schema: run.clone(),
        db_url: args.database_url.clone(),
        topics: Vec::new(),
        es: Es::new(&args.elasticsearch_url),
        codec: EventCodec::new(&args.schema_registry_url),
        pg_data: Dataset::new(
            &format!("{run}p"),
            (s.pg_events / data::EVENTS_PER_ORDER / 4).max(1),
        ),
        es_data: Dataset::new(
            &format!("{run}e"),
            (s.es_events / data::EVENTS_PER_ORDER / 4).max(1),
        ),
        pg_ends: HashMap::new(),
        es_ends: HashMap::new(),
        order_summary: None,
        read_api: None,
        run,
        s,
        args,
    };
    eprintln!(
        "[bench] run {} (quick: {}), services from {}",
        bench.run,
        bench.s.quick,
        bench.binaries.dir.display()
    );
    match setup(&mut bench).await {
        Ok(()) => {
            limits(&mut bench).await;
            write_side(&mut bench).await;
            projectors(&mut bench).await;
            read_api(&mut bench).await;
            end_to_end(&mut bench).await;
        }
        Err(reason) => bench.fail("setup", "setup", "topics, schema, index", reason),
    }
    if let Some(service) = bench.read_api.take() {
        let kb = service.stop().await;
        bench.remember_memory("read-api", kb);
    }
    if let Some(service) = bench.order_summary.take() {
        let kb = service.stop().await;
        bench.remember_memory("order-summary", kb);
    }
    cleanup(&bench).await;
    let targets = targets(&bench);
    let report = Report {
        started_at,
        quick: bench.s.quick,
        profile: bench.args.profile.clone(),
        settings: serde_json::to_value(&bench.s).unwrap_or(Value::Null),
        rows: bench.rows,
        targets,
        peak_memory_mib: bench
            .memory_kb
            .iter()
            .map(|(k, v)| (k.clone(), (*v as f64 / 1024.0 * 10.0).round() / 10.0))
            .collect(),
        total_seconds: started.elapsed().as_secs_f64().round(),
    };
    report
}

async fn setup(b: &mut Bench) -> StageResult<()> {
    if !b.es.ping().await {
        return Err(format!(
            "elasticsearch does not answer at {}",
            b.args.elasticsearch_url
        ));
    }
    b.db_url = pg::fresh_schema(&b.args.database_url, &b.schema)
        .await
        .map_err(err)?;
    for what in ["p", "e", "w"] {
        let prefix = b.prefix(what);
        let topics = kafka::create_prefixed_topics(&b.args.kafka_brokers, &prefix, b.s.partitions)
            .await
            .map_err(err)?;
        b.topics.extend(topics);
    }
    Ok(())
}

async fn cleanup(b: &Bench) {
    if b.args.keep {
        eprintln!(
            "[bench] kept: topics {}_*, schema {}, indices {}_*",
            b.run, b.schema, b.run
        );
        return;
    }
    kafka::delete_topics(&b.args.kafka_brokers, &b.topics).await;
    pg::drop_schema(&b.args.database_url, &b.schema).await;
    b.es.delete_indices(&format!("{}_*", b.run)).await;
}

/// The PostgreSQL backlog's events, in log order.
fn pg_backlog(b: &Bench) -> impl Iterator<Item = SampleEvent> + '_ {
    let orders = (b.s.pg_events / data::EVENTS_PER_ORDER).max(1);
    (0..orders * data::EVENTS_PER_ORDER).map(move |n| {
        let (i, step) = Dataset::backlog_slot(n, orders);
        b.pg_data.order_event(i, step)
    })
}

/// The Elasticsearch backlog: customers first, then the orders.
fn es_backlog(b: &Bench) -> Vec<SampleEvent> {
    let orders = (b.s.es_events / data::EVENTS_PER_ORDER).max(1);
    let mut events: Vec<SampleEvent> = (0..b.es_data.customers())
        .map(|c| b.es_data.customer_registered(c))
        .collect();
    events.extend((0..orders * data::EVENTS_PER_ORDER).map(|n| {
        let (i, step) = Dataset::backlog_slot(n, orders);
        b.es_data.order_event(i, step)
    }));
    events
}

async fn encode_backlog(
    b: &Bench,
    prefix: &str,
    events: impl Iterator<Item = SampleEvent>,
) -> StageResult<Vec<EncodedRecord>> {
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(10_000);
    let mut events = events.peekable();
    while events.peek().is_some() {
        chunk.clear();
        chunk.extend(events.by_ref().take(10_000));
        out.extend(kafka::encode(&b.codec, prefix, &chunk).await.map_err(err)?);
    }
    Ok(out)
}

async fn limits(b: &mut Bench) {
    // Kafka produce: the PostgreSQL backlog, encoded beforehand (encoding is not the broker's).
    let prefix = b.prefix("p");
    let encode_started = Instant::now();
    let records = match encode_backlog(b, &prefix, pg_backlog(b)).await {
        Ok(r) => r,
        Err(e) => {
            return b.fail(
                LIMITS,
                "limit.kafka_produce",
                "kafka produce (raw rdkafka)",
                e,
            )
        }
    };
    let encode_seconds = encode_started.elapsed().as_secs_f64();
    let avg =
        records.iter().map(EncodedRecord::size).sum::<usize>() as f64 / records.len().max(1) as f64;
    let brokers = b.args.kafka_brokers.clone();
    let cpu = b.cpu.snapshot();
    let records = Arc::new(records);
    let to_send = records.clone();
    let produced = kafka::blocking(move || kafka::produce_raw(&brokers, &to_send)).await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    match produced {
        Ok(p) => {
            let secs = p.elapsed.as_secs_f64();
            let mut row = Row::ok(LIMITS, "limit.kafka_produce", "kafka produce (raw rdkafka, acks=all, idempotent)", "records/s", p.records as f64 / secs)
                .measured(p.records, secs)
                .note(format!(
                    "{:.0} bytes/record (key+value+headers), {:.1} MB/s; encoding beforehand took {encode_seconds:.1} s",
                    avg,
                    p.bytes as f64 / secs / 1e6
                ));
            row.cpu_cores = cores;
            b.push(row);
            b.pg_ends = p.ends;
        }
        Err(e) => {
            return b.fail(
                LIMITS,
                "limit.kafka_produce",
                "kafka produce (raw rdkafka)",
                err(e),
            )
        }
    }

    // Avro decode through the registry codec (CPU only, one core): what every projector pays.
    let sample: Vec<Vec<u8>> = records
        .iter()
        .take(50_000)
        .map(|r| r.payload.clone())
        .collect();
    drop(records);
    let started = Instant::now();
    let mut decoded = 0u64;
    let mut failed = None;
    for payload in &sample {
        match b.codec.decode(payload).await {
            Ok(_) => decoded += 1,
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    match failed {
        None => {
            let secs = started.elapsed().as_secs_f64();
            b.push(
                Row::ok(
                    LIMITS,
                    "limit.avro_decode",
                    "avro decode (EventCodec, 1 core, informational)",
                    "events/s",
                    decoded as f64 / secs,
                )
                .measured(decoded, secs),
            );
        }
        Some(e) => b.fail(LIMITS, "limit.avro_decode", "avro decode", e),
    }

    // Kafka consume: the same backlog from the beginning.
    let brokers = b.args.kafka_brokers.clone();
    let topic = format!("{prefix}orders");
    let timeout = Duration::from_secs(b.s.catch_up_timeout_secs);
    let cpu = b.cpu.snapshot();
    let consumed = kafka::blocking(move || kafka::consume_raw(&brokers, &topic, timeout)).await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    match consumed {
        Ok(c) => {
            let secs = c.elapsed.as_secs_f64();
            let mut row = Row::ok(
                LIMITS,
                "limit.kafka_consume",
                "kafka consume (raw rdkafka, same backlog)",
                "records/s",
                c.records as f64 / secs,
            )
            .measured(c.records, secs)
            .note(format!("{:.1} MB/s", c.bytes as f64 / secs / 1e6));
            row.cpu_cores = cores;
            b.push(row);
        }
        Err(e) => b.fail(
            LIMITS,
            "limit.kafka_consume",
            "kafka consume (raw rdkafka)",
            err(e),
        ),
    }

    // PostgreSQL: the order_summary row after every event, batched upserts.
    // Rows are derived lazily; only database time is counted.
    let mut state: HashMap<String, OrderSummary> = HashMap::new();
    let rows = pg_backlog(b).filter_map(move |event| {
        let previous = state.remove(&event.key);
        let row = data::summary_after(previous, &event)?;
        if event.event_type == "OrderPlaced" || event.event_type == "OrderShipped" {
            state.insert(event.key.clone(), row.clone());
        }
        Some(row)
    });
    let cpu = b.cpu.snapshot();
    let upserted = pg::upsert_raw(&b.db_url, rows, b.s.pg_batch_rows).await;
    let cores = cpu.cores_until(&b.cpu.snapshot());
    match upserted {
        Ok(u) => {
            let secs = u.elapsed.as_secs_f64();
            let mut row = Row::ok(
                LIMITS,
                "limit.pg_upsert",
                "postgres upsert of order_summary rows (raw)",
                "rows/s",
                u.rows as f64 / secs,
            )
            .measured(u.rows, secs)
            .note(format!(
                "one row write per event, {} transactions of <= {} rows (unnest + ON CONFLICT)",
                u.batches, b.s.pg_batch_rows
            ));
            row.cpu_cores = cores;
            b.push(row);
        }
        Err(e) => b.fail(LIMITS, "limit.pg_upsert", "postgres upsert (raw)", err(e)),
    }

    // The Elasticsearch backlog: produced untimed (the projectors' input), then raw _bulk of the
    // documents the search projectors write.
    let es_prefix = b.prefix("e");
    let events = es_backlog(b);
    match encode_backlog(b, &es_prefix, events.iter().cloned()).await {
        Ok(records) => {
            let brokers = b.args.kafka_brokers.clone();
            match kafka::blocking(move || kafka::produce_raw(&brokers, &records)).await {
                Ok(p) => b.es_ends = p.ends,
                Err(e) => {
                    return b.fail(
                        LIMITS,
                        "limit.es_bulk_order_search",
                        "elasticsearch backlog",
                        err(e),
                    )
                }
            }
        }
        Err(e) => {
            return b.fail(
                LIMITS,
                "limit.es_bulk_order_search",
                "elasticsearch backlog",
                e,
            )
        }
    }
    es_limits(b, &events).await;
}

async fn es_limits(b: &mut Bench, events: &[SampleEvent]) {
    let mut customers: HashMap<String, Value> = HashMap::new();
    let mut placed: HashMap<String, Value> = HashMap::new();
    let mut state: HashMap<String, OrderSummary> = HashMap::new();
    let mut order_docs = Vec::new();
    let mut event_docs = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let topic = format!("{}{}", b.prefix("e"), event.topic);
        event_docs.push((
            event.event_id.to_string(),
            data::event_index_doc(
                event,
                &topic,
                (n % b.s.partitions as usize) as i32,
                n as i64,
            ),
        ));
        if event.event_type == "CustomerRegistered" {
            customers.insert(event.key.clone(), event.body.clone());
            continue;
        }
        if event.event_type == "OrderPlaced" {
            placed.insert(event.key.clone(), event.body.clone());
        }
        let Some(row) = data::summary_after(state.remove(&event.key), event) else {
            continue;
        };
        let customer = row
            .customer_id
            .as_ref()
            .and_then(|c| customers.get(c))
            .cloned()
            .unwrap_or(Value::Null);
        order_docs.push((
            row.order_id.clone(),
            data::order_search_doc(&row, placed.get(&event.key), &customer),
        ));
        state.insert(event.key.clone(), row);
    }
    let mappings = b.args.repo_root.join("projectors/mappings");
    for (key, label, index, docs, mapping, unit) in [
        (
            "limit.es_bulk_order_search",
            "elasticsearch _bulk, order_search docs (raw)",
            format!("{}raw_order_search", b.prefix("e")),
            order_docs,
            mappings.join("order_search.json"),
            "order events",
        ),
        (
            "limit.es_bulk_event_index",
            "elasticsearch _bulk, event_index docs (raw)",
            format!("{}raw_event_index", b.prefix("e")),
            event_docs,
            mappings.join("event_index.json"),
            "events",
        ),
    ] {
        let mapping_note = if mapping.is_file() {
            format!("mapping {}", mapping.display())
        } else {
            "dynamic mapping (projector mapping file not found)".to_owned()
        };
        if let Err(e) = b.es.create_index(&index, &mapping).await {
            b.fail(LIMITS, key, label, err(e));
            continue;
        }
        let cpu = b.cpu.snapshot();
        let result = b.es.bulk_raw(&index, &docs, b.s.es_bulk_docs).await;
        let cores = cpu.cores_until(&b.cpu.snapshot());
        match result {
            Ok(elapsed) => {
                let secs = elapsed.as_secs_f64();
                let mut row = Row::ok(LIMITS, key, label, "docs/s", docs.len() as f64 / secs)
                    .measured(docs.len() as u64, secs)
                    .note(format!(
                        "{} docs ({unit}), {} per request, {mapping_note}",
                        docs.len(),
                        b.s.es_bulk_docs
                    ));
                row.cpu_cores = cores;
                b.push(row);
            }
            Err(e) => b.fail(LIMITS, key, label, err(e)),
        }
    }
}

fn accepted_judge() -> Judge {
    Arc::new(|status, _| u64::from(status == 202))
}

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

async fn start_write_side(b: &mut Bench, name: &str, prefix: &str) -> StageResult<Service> {
    let addr = free_addr().map_err(err)?;
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
    .await
    .map_err(err)?;
    b.cpu.add("write-side", service.pid(), false);
    Ok(service)
}

async fn write_side(b: &mut Bench) {
    const SINGLE: &str = "write.single";
    const BATCH: &str = "write.batch";
    if b.binaries.find("factline-write-side").is_none() {
        let reason = format!(
            "factline-write-side not built in {}",
            b.binaries.dir.display()
        );
        b.skip(WRITE, SINGLE, "POST /commands/PlaceOrder", reason.clone());
        b.skip(WRITE, BATCH, "POST /commands (batch)", reason);
        return;
    }
    let prefix = b.prefix("w");
    let mut service = match start_write_side(b, "write-side", &prefix).await {
        Ok(s) => s,
        Err(e) => {
            b.fail(WRITE, SINGLE, "POST /commands/PlaceOrder", e.clone());
            b.fail(WRITE, BATCH, "POST /commands (batch)", e);
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
                WRITE,
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
        Err(e) => b.fail(WRITE, SINGLE, "POST /commands/PlaceOrder", err(e)),
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
                WRITE,
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
        Err(e) => b.fail(WRITE, BATCH, "POST /commands (batch)", err(e)),
    }
    b.cpu.remove("write-side");
    let kb = service.stop().await;
    b.remember_memory("write-side", kb);
}

async fn start_projector(
    b: &mut Bench,
    name: &str,
    binary: &str,
    prefix: &str,
) -> StageResult<Service> {
    let addr = free_addr().map_err(err)?;
    let mut env = b.common_env();
    env.push(("PROJECTOR_ADDR".into(), addr.to_string()));
    env.push(("PROJECTOR_TOPIC_PREFIX".into(), prefix.to_owned()));
    if binary != "order-summary" {
        env.push(("PROJECTOR_INDEX_PREFIX".into(), prefix.to_owned()));
    }
    Service::start(&b.binaries, name, binary, &[], addr, "/healthz", &env)
        .await
        .map_err(err)
}

/// One projector catch-up to measure.
struct CatchUpJob<'a> {
    key: &'a str,
    label: &'a str,
    binary: &'a str,
    projector: &'a str,
    prefix: &'a str,
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
        ends,
        limit,
    } = job;
    if b.binaries.find(binary).is_none() {
        b.skip(
            PROJ,
            key,
            label,
            format!(
                "{binary} not built in {} (not landed yet?)",
                b.binaries.dir.display()
            ),
        );
        return None;
    }
    let total: i64 = ends.values().sum();
    let cpu = b.cpu.snapshot();
    let started = Instant::now();
    let mut service = match start_projector(b, binary, binary, prefix).await {
        Ok(s) => s,
        Err(e) => {
            b.fail(PROJ, key, label, e);
            return None;
        }
    };
    b.cpu.add(binary, service.pid(), false);
    let timeout = Duration::from_secs(b.s.catch_up_timeout_secs);
    let pid = service.pid();
    let caught = pg::wait_caught_up(
        &b.db_url,
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
            let mut row = Row::ok(PROJ, key, label, "events/s", total as f64 / secs)
                .measured(total as u64, secs)
                .ratio(limit);
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
            row.cpu_cores = cores;
            b.push(row);
            Some(service)
        }
        Err(e) => {
            let reason = format!("{e}; log tail: {}", service.log_tail(5));
            b.fail(PROJ, key, label, reason);
            b.cpu.remove(binary);
            let kb = service.stop().await;
            b.remember_memory(binary, kb);
            None
        }
    }
}

fn limit_of(b: &Bench, sink: &str, sink_name: &str) -> Option<(String, f64)> {
    let consume = b.rate("limit.kafka_consume")?;
    let sink_rate = b.rate(sink)?;
    Some(if consume <= sink_rate {
        ("kafka consume".to_owned(), consume)
    } else {
        (sink_name.to_owned(), sink_rate)
    })
}

async fn projectors(b: &mut Bench) {
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
            ends: all_ends.clone(),
            limit: limit.as_ref().map(|(n, v)| (n.as_str(), *v)),
        };
        if let Some(service) = catch_up(b, job).await {
            b.cpu.remove(binary);
            let kb = service.stop().await;
            b.remember_memory(binary, kb);
        }
    }
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
            ends,
            limit: limit.as_ref().map(|(n, v)| (n.as_str(), *v)),
        },
    )
    .await;

    if let Some(service) = b.order_summary.as_mut() {
        let kb = service.sample_memory();
        b.remember_memory("order-summary", kb);
    }
}

async fn read_api(b: &mut Bench) {
    let checks = [
        ("read.by_id", "GET /orders/{id}"),
        ("read.list", "GET /customers/{id}/orders"),
        ("read.search", "GET /search/orders?q=…"),
    ];
    if b.binaries.find("factline-read-api").is_none() {
        for (key, label) in checks {
            b.skip(
                READ,
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
        Err(e) => return b.fail(READ, "read.by_id", "read api", err(e)),
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
            for (key, label) in checks {
                b.fail(READ, key, label, err(&e));
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
                READ,
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
                    READ,
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
            Err(e) => b.fail(READ, key, label, err(e)),
        }
    }
    if let Some(service) = b.read_api.as_mut() {
        let kb = service.sample_memory();
        b.remember_memory("read-api", kb);
    }
}

async fn end_to_end(b: &mut Bench) {
    let rates = b.s.e2e_rates.clone();
    let key_of = |rate: f64| format!("e2e.{}", rate as u64);
    let label_of = |rate: f64| format!("202 -> GET /orders/{{id}} = 200 at {} cmd/s", rate as u64);
    let reason = if b.binaries.find("factline-write-side").is_none() {
        Some("factline-write-side not built".to_owned())
    } else if b.order_summary.is_none() {
        Some("the order-summary projector is not running (see projectors)".to_owned())
    } else if b.read_api.is_none() {
        Some("the read API is not running (factline-read-api not built or failed)".to_owned())
    } else {
        None
    };
    if let Some(reason) = reason {
        for rate in rates {
            b.skip(E2E, &key_of(rate), &label_of(rate), reason.clone());
        }
        return;
    }
    let prefix = b.prefix("p");
    let mut service = match start_write_side(b, "write-side-e2e", &prefix).await {
        Ok(s) => s,
        Err(e) => {
            for rate in rates {
                b.fail(E2E, &key_of(rate), &label_of(rate), e.clone());
            }
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
                let mut row = Row::ok(E2E, &key, &label, "commands/s", r.items_per_second())
                    .measured(r.items, r.elapsed.as_secs_f64())
                    .latency(q(0.5), q(0.99), q(0.999))
                    .note(format!(
                        "offered {rate:.0} cmd/s open loop; visibility of {} tracked commands (1 in {every}, each read once with consistent_with){}; command 202 latency p50 {:.2} ms, p99 {:.2} ms",
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
                row.cpu_cores = cores;
                b.push(row);
            }
            Err(e) => b.fail(E2E, &key, &label, err(e)),
        }
    }
    b.cpu.remove("write-side");
    let kb = service.stop().await;
    b.remember_memory("write-side", kb);
}

fn verdict(ok: bool) -> String {
    if ok { "reached" } else { "not reached" }.to_owned()
}

fn busiest(row: &Row) -> Option<String> {
    let mut cpu: Vec<(&String, &f64)> = row.cpu_cores.iter().collect();
    cpu.sort_by(|a, b| b.1.total_cmp(a.1));
    let total: f64 = row.cpu_cores.values().sum();
    cpu.retain(|(n, _)| n.as_str() != "other");
    let other = row.cpu_cores.get("other").copied().unwrap_or(0.0);
    let top: Vec<String> = cpu
        .iter()
        .take(3)
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect();
    if top.is_empty() {
        return None;
    }
    let kind = if total >= 1.7 {
        "CPU-bound (both cores busy)".to_owned()
    } else if cpu.first().is_some_and(|(_, c)| **c >= 0.9) {
        format!("one process saturates a core ({})", cpu[0].0)
    } else {
        "not CPU-bound: waiting (round trips, batching linger, fsync, or too few requests in flight)"
            .to_owned()
    };
    let shared = if other >= 0.3 {
        format!("; NOTE {other:.2} cores used by other processes on the machine meanwhile")
    } else {
        String::new()
    };
    Some(format!(
        "{kind}; cpu cores used: {} (machine total {total:.2} of 2){shared}",
        top.join(", ")
    ))
}

fn targets(b: &Bench) -> Vec<Target> {
    let row = |key: &str| b.rows.iter().find(|r| r.key == key);
    let ok_row = |key: &str| row(key).filter(|r| r.state == State::Ok);
    let skipped = |goal: &str, key: &str| Target {
        goal: goal.to_owned(),
        measured: row(key)
            .map(|r| {
                format!(
                    "{:?}: {}",
                    r.state,
                    r.reason
                        .clone()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or("")
                )
                .to_lowercase()
            })
            .unwrap_or_else(|| "not run".into()),
        verdict: "skipped".into(),
        bottleneck: None,
    };
    let mut out = Vec::new();

    let goal = "batch endpoint >= 100k commands/s or >= 80% of raw producer";
    out.push(match ok_row("write.batch") {
        Some(r) => {
            let rate = r.rate.unwrap_or_default();
            let reached = rate >= 100_000.0 || r.ratio.is_some_and(|x| x >= 0.8);
            Target {
                goal: goal.into(),
                measured: format!("{} cmd/s, {}", crate::report::human(rate), pct(r.ratio)),
                verdict: verdict(reached),
                bottleneck: (!reached).then(|| busiest(r)).flatten(),
            }
        }
        None => skipped(goal, "write.batch"),
    });
    let goal = "single-command >= 20k commands/s with p99 < 25 ms";
    out.push(match ok_row("write.single") {
        Some(r) => {
            let rate = r.rate.unwrap_or_default();
            let p99 = r.p99_ms.unwrap_or(f64::MAX);
            let reached = rate >= 20_000.0 && p99 < 25.0;
            Target {
                goal: goal.into(),
                measured: format!("{} cmd/s, p99 {p99:.1} ms", crate::report::human(rate)),
                verdict: verdict(reached),
                bottleneck: (!reached).then(|| busiest(r)).flatten(),
            }
        }
        None => skipped(goal, "write.single"),
    });
    let goal = "PG projector >= 50k events/s and >= 70% of its limit";
    out.push(match ok_row("projector.order_summary") {
        Some(r) => {
            let rate = r.rate.unwrap_or_default();
            let reached = rate >= 50_000.0 && r.ratio.is_some_and(|x| x >= 0.7);
            Target {
                goal: goal.into(),
                measured: format!(
                    "{} ev/s, {} of {}",
                    crate::report::human(rate),
                    pct(r.ratio),
                    r.ratio_to.clone().unwrap_or_default()
                ),
                verdict: verdict(reached),
                bottleneck: (!reached).then(|| busiest(r)).flatten(),
            }
        }
        None => skipped(goal, "projector.order_summary"),
    });
    for (key, name) in [
        ("projector.order_search", "order_search"),
        ("projector.event_index", "event_index"),
    ] {
        let goal = format!("ES projector ({name}) >= 70% of its limit");
        out.push(match ok_row(key) {
            Some(r) => {
                let reached = r.ratio.is_some_and(|x| x >= 0.7);
                Target {
                    goal,
                    measured: format!(
                        "{} ev/s, {} of {}",
                        crate::report::human(r.rate.unwrap_or_default()),
                        pct(r.ratio),
                        r.ratio_to.clone().unwrap_or_default()
                    ),
                    verdict: verdict(reached),
                    bottleneck: (!reached).then(|| busiest(r)).flatten(),
                }
            }
            None => skipped(&goal, key),
        });
    }
    let goal = "read by id >= 15k requests/s with p99 < 10 ms";
    out.push(match ok_row("read.by_id") {
        Some(r) => {
            let rate = r.rate.unwrap_or_default();
            let p99 = r.p99_ms.unwrap_or(f64::MAX);
            let reached = rate >= 15_000.0 && p99 < 10.0;
            Target {
                goal: goal.into(),
                measured: format!("{} req/s, p99 {p99:.1} ms", crate::report::human(rate)),
                verdict: verdict(reached),
                bottleneck: (!reached).then(|| busiest(r)).flatten(),
            }
        }
        None => skipped(goal, "read.by_id"),
    });
    let goal = "end-to-end p99 < 250 ms at 1k commands/s";
    out.push(match ok_row("e2e.1000") {
        Some(r) => {
            let p99 = r.p99_ms.unwrap_or(f64::MAX);
            let reached = p99 < 250.0;
            Target {
                goal: goal.into(),
                measured: format!(
                    "p50 {:.0} ms, p99 {p99:.0} ms",
                    r.p50_ms.unwrap_or_default()
                ),
                verdict: verdict(reached),
                bottleneck: (!reached).then(|| busiest(r)).flatten(),
            }
        }
        None if b.s.quick => Target {
            goal: goal.into(),
            measured: "quick mode offers other rates".into(),
            verdict: "skipped".into(),
            bottleneck: None,
        },
        None => skipped(goal, "e2e.1000"),
    });
    out
}

fn pct(ratio: Option<f64>) -> String {
    ratio.map_or("no limit measured".into(), |r| format!("{:.0}%", r * 100.0))
}
