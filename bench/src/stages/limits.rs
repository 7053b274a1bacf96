//! The limits of the systems under factline, measured first so every later stage can be judged
//! against them in the same run: raw rdkafka produce and consume of the PostgreSQL backlog, Avro
//! decode through the registry codec, raw PostgreSQL upserts of the rows `order_summary` writes,
//! and raw Elasticsearch `_bulk` of the documents the search projectors write. It also produces
//! both backlogs the projectors stage catches up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use factline_projectors::projections::order_summary::OrderSummary;
use serde_json::Value;

use super::Bench;
use crate::data::{self, Dataset, SampleEvent};
use crate::error::BenchError;
use crate::kafka::{self, EncodedRecord};
use crate::pg;
use crate::report::Row;

/// The stage's name in the table.
pub const STAGE: &str = "limits";

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
) -> Result<Vec<EncodedRecord>, BenchError> {
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(10_000);
    let mut events = events.peekable();
    while events.peek().is_some() {
        chunk.clear();
        chunk.extend(events.by_ref().take(10_000));
        out.extend(kafka::encode(&b.codec, prefix, &chunk).await?);
    }
    Ok(out)
}

/// Measures the limits and produces both backlogs.
pub async fn run(b: &mut Bench) {
    // Kafka produce: the PostgreSQL backlog, encoded beforehand (encoding is not the broker's).
    let prefix = b.prefix("p");
    let encode_started = Instant::now();
    let records = match encode_backlog(b, &prefix, pg_backlog(b)).await {
        Ok(r) => r,
        Err(e) => {
            return b.fail(
                STAGE,
                "limit.kafka_produce",
                "kafka produce (raw rdkafka)",
                &e,
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
            let mut row = Row::ok(STAGE, "limit.kafka_produce", "kafka produce (raw rdkafka, acks=all, idempotent)", "records/s", p.records as f64 / secs)
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
                STAGE,
                "limit.kafka_produce",
                "kafka produce (raw rdkafka)",
                &e.into(),
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
                failed = Some(BenchError::from(e));
                break;
            }
        }
    }
    match failed {
        None => {
            let secs = started.elapsed().as_secs_f64();
            b.push(
                Row::ok(
                    STAGE,
                    "limit.avro_decode",
                    "avro decode (EventCodec, 1 core, informational)",
                    "events/s",
                    decoded as f64 / secs,
                )
                .measured(decoded, secs),
            );
        }
        Some(e) => b.fail(STAGE, "limit.avro_decode", "avro decode", &e),
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
                STAGE,
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
            STAGE,
            "limit.kafka_consume",
            "kafka consume (raw rdkafka)",
            &e.into(),
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
                STAGE,
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
        Err(e) => b.fail(STAGE, "limit.pg_upsert", "postgres upsert (raw)", &e.into()),
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
                        STAGE,
                        "limit.es_bulk_order_search",
                        "elasticsearch backlog",
                        &e.into(),
                    )
                }
            }
        }
        Err(e) => {
            return b.fail(
                STAGE,
                "limit.es_bulk_order_search",
                "elasticsearch backlog",
                &e,
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
            b.fail(STAGE, key, label, &e.into());
            continue;
        }
        let cpu = b.cpu.snapshot();
        let result = b.es.bulk_raw(&index, &docs, b.s.es_bulk_docs).await;
        let cores = cpu.cores_until(&b.cpu.snapshot());
        match result {
            Ok(elapsed) => {
                let secs = elapsed.as_secs_f64();
                let mut row = Row::ok(STAGE, key, label, "docs/s", docs.len() as f64 / secs)
                    .measured(docs.len() as u64, secs)
                    .note(format!(
                        "{} docs ({unit}), {} per request, {mapping_note}",
                        docs.len(),
                        b.s.es_bulk_docs
                    ));
                row.cpu_cores = cores;
                b.push(row);
            }
            Err(e) => b.fail(STAGE, key, label, &e.into()),
        }
    }
}
