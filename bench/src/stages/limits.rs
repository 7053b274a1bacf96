//! The limits of the systems under factline, measured first so every later stage can be judged
//! against them in the same run: raw rdkafka produce and consume of the PostgreSQL backlog, Avro
//! decode through the registry codec, raw PostgreSQL upserts of the rows `order_summary` writes,
//! and raw Elasticsearch `_bulk` of the documents the search projectors write. It also produces
//! the backlogs the later stages catch up, in clear; the projectors stage produces the one with
//! personal fields encrypted ([`produce_sealed_backlog`]) when it needs it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use factline_projectors::projections::order_summary::OrderSummary;
use serde_json::Value;

use super::{Bench, Cores};
use crate::data::{self, Dataset, SampleEvent};
use crate::error::BenchError;
use crate::kafka::{self, EncodedRecord};
use crate::pg;
use crate::report::Row;
use factline_keystore::FieldCrypto;

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
    crypto: Option<&FieldCrypto>,
) -> Result<Vec<EncodedRecord>, BenchError> {
    let mut out = Vec::new();
    let mut chunk = Vec::with_capacity(10_000);
    let mut events = events.peekable();
    while events.peek().is_some() {
        chunk.clear();
        chunk.extend(events.by_ref().take(10_000));
        out.extend(kafka::encode(&b.codec, prefix, &chunk, crypto).await?);
    }
    Ok(out)
}

/// Measures the limits and produces both backlogs.
pub async fn run(b: &mut Bench) {
    let Some(records) = kafka_produce(b).await else {
        return;
    };
    avro_decode(b, records).await;
    kafka_consume(b).await;
    pg_upsert(b).await;
    // The Elasticsearch backlog: produced untimed (the projectors' input), then raw _bulk of the
    // documents the search projectors write.
    let events = es_backlog(b);
    if let Err(e) = produce_es_backlog(b, &events).await {
        return b.fail(
            STAGE,
            "limit.es_bulk_order_search",
            "elasticsearch backlog",
            &e,
        );
    }
    es_limits(b, &events).await;
}

/// A limit measured: `count` items in `secs`.
fn limit_row(key: &str, label: &str, unit: &str, count: u64, secs: f64) -> Row {
    Row::ok(STAGE, key, label, unit, count as f64 / secs).measured(count, secs)
}

/// Kafka produce: the PostgreSQL backlog, encoded beforehand (encoding is not the broker's).
/// Returns the records produced, or `None` when the stage cannot go on.
async fn kafka_produce(b: &mut Bench) -> Option<Vec<EncodedRecord>> {
    const KEY: &str = "limit.kafka_produce";
    let prefix = b.prefix("p");
    let encode_started = Instant::now();
    let records = match encode_backlog(b, &prefix, pg_backlog(b), None).await {
        Ok(r) => r,
        Err(e) => {
            b.fail(STAGE, KEY, "kafka produce (raw rdkafka)", &e);
            return None;
        }
    };
    let encode_seconds = encode_started.elapsed().as_secs_f64();
    let avg =
        records.iter().map(EncodedRecord::size).sum::<usize>() as f64 / records.len().max(1) as f64;
    let brokers = b.args.kafka_brokers.clone();
    b.settle("kafka produce").await;
    let (produced, cores) = b
        .with_cpu(kafka::blocking(move || {
            kafka::produce_raw(&brokers, &records).map(|p| (p, records))
        }))
        .await;
    match produced {
        Ok((p, records)) => {
            let secs = p.elapsed.as_secs_f64();
            let row = limit_row(KEY, "kafka produce (raw rdkafka, acks=all, idempotent)", "records/s", p.records, secs)
                .note(format!(
                    "{:.0} bytes/record (key+value+headers), {:.1} MB/s; encoding beforehand took {encode_seconds:.1} s",
                    avg,
                    p.bytes as f64 / secs / 1e6
                ))
                .cpu(cores);
            b.push(row);
            b.pg_ends = p.ends;
            Some(records)
        }
        Err(e) => {
            b.fail(STAGE, KEY, "kafka produce (raw rdkafka)", &e.into());
            None
        }
    }
}

/// Avro decode through the registry codec (CPU only, one core): what every projector pays.
/// Decodes the first 50k records; the others are freed first.
async fn avro_decode(b: &mut Bench, mut records: Vec<EncodedRecord>) {
    records.truncate(50_000);
    records.shrink_to_fit();
    let started = Instant::now();
    let mut decoded = 0u64;
    for record in &records {
        if let Err(e) = b.codec.decode(&record.payload).await {
            return b.fail(
                STAGE,
                "limit.avro_decode",
                "avro decode",
                &BenchError::from(e),
            );
        }
        decoded += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    b.push(limit_row(
        "limit.avro_decode",
        "avro decode (EventCodec, 1 core, informational)",
        "events/s",
        decoded,
        secs,
    ));
}

/// Kafka consume: the PostgreSQL backlog from the beginning, read twice; the limit is the
/// faster read. Reads of the same backlog on noida-db take one of two speeds, about 400–440k
/// or 710–830k records/s here, whichever read comes first and whether or not the broker is
/// busy meanwhile; the slow ones leave both the client and the broker mostly idle.
async fn kafka_consume(b: &mut Bench) {
    const KEY: &str = "limit.kafka_consume";
    const LABEL: &str = "kafka consume (raw rdkafka, same backlog, best of 2)";
    let mut best: Option<(kafka::Consumed, Cores)> = None;
    let mut rates = Vec::new();
    for _ in 0..2 {
        let brokers = b.args.kafka_brokers.clone();
        let topic = format!("{}orders", b.prefix("p"));
        let timeout = Duration::from_secs(b.s.catch_up_timeout_secs);
        b.settle("kafka consume").await;
        let (consumed, cores) = b
            .with_cpu(kafka::blocking(move || {
                kafka::consume_raw(&brokers, &topic, timeout)
            }))
            .await;
        match consumed {
            Ok(c) => {
                rates.push(c.records as f64 / c.elapsed.as_secs_f64());
                if best.as_ref().is_none_or(|(b, _)| c.elapsed < b.elapsed) {
                    best = Some((c, cores));
                }
            }
            Err(e) => return b.fail(STAGE, KEY, LABEL, &e.into()),
        }
    }
    let Some((c, cores)) = best else { return };
    let secs = c.elapsed.as_secs_f64();
    let reads = rates
        .iter()
        .map(|r| format!("{:.1}k", r / 1e3))
        .collect::<Vec<_>>()
        .join(" and ");
    let row = limit_row(KEY, LABEL, "records/s", c.records, secs)
        .note(format!(
            "{:.1} MB/s; reads at {reads} records/s",
            c.bytes as f64 / secs / 1e6
        ))
        .cpu(cores);
    b.push(row);
}

/// PostgreSQL: the order_summary row after every event, batched upserts. Rows are derived
/// lazily; only database time is counted.
async fn pg_upsert(b: &mut Bench) {
    let mut state: HashMap<String, OrderSummary> = HashMap::new();
    let rows = pg_backlog(b).filter_map(move |event| {
        let previous = state.remove(&event.key);
        let row = data::summary_after(previous, &event)?;
        if event.event_type == "OrderPlaced" || event.event_type == "OrderShipped" {
            state.insert(event.key.clone(), row.clone());
        }
        Some(row)
    });
    b.settle("postgres upsert").await;
    let (upserted, cores) = b
        .with_cpu(pg::upsert_raw(&b.db_url, rows, b.s.pg_batch_rows))
        .await;
    match upserted {
        Ok(u) => {
            let row = limit_row(
                "limit.pg_upsert",
                "postgres upsert of order_summary rows (raw)",
                "rows/s",
                u.rows,
                u.elapsed.as_secs_f64(),
            )
            .note(format!(
                "one row write per event, {} transactions of <= {} rows (unnest + ON CONFLICT)",
                u.batches, b.s.pg_batch_rows
            ))
            .cpu(cores);
            b.push(row);
        }
        Err(e) => b.fail(STAGE, "limit.pg_upsert", "postgres upsert (raw)", &e.into()),
    }
}

/// Produces the Elasticsearch backlog (untimed) and keeps its end offsets.
async fn produce_es_backlog(b: &mut Bench, events: &[SampleEvent]) -> Result<(), BenchError> {
    let records = encode_backlog(b, &b.prefix("e"), events.iter().cloned(), None).await?;
    let brokers = b.args.kafka_brokers.clone();
    let produced = kafka::blocking(move || kafka::produce_raw(&brokers, &records)).await?;
    b.es_ends = produced.ends;
    Ok(())
}

/// Raw `_bulk` of the documents each search projector writes, into an index with its mapping.
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
        b.settle("elasticsearch _bulk").await;
        let (result, cores) = b
            .with_cpu(b.es.bulk_raw(&index, &docs, b.s.es_bulk_docs))
            .await;
        match result {
            Ok(elapsed) => {
                let row = limit_row(
                    key,
                    label,
                    "docs/s",
                    docs.len() as u64,
                    elapsed.as_secs_f64(),
                )
                .note(format!(
                    "{} docs ({unit}), {} per request, {mapping_note}",
                    docs.len(),
                    b.s.es_bulk_docs
                ))
                .cpu(cores);
                b.push(row);
            }
            Err(e) => b.fail(STAGE, key, label, &e.into()),
        }
    }
}

/// The PostgreSQL backlog again, under the `s` prefix, with every personal field encrypted
/// through the key store (`FACTLINE_KEK*`, `FACTLINE_KEYS_*`, as the services read them):
/// what `order_summary` decrypts in the projectors stage. Produced untimed, by that stage and
/// only for it (its topics are deleted once caught up): a broker that saves its whole state on
/// every change (noida-db) then does not pay for a second backlog in every stage before.
pub(crate) async fn produce_sealed_backlog(b: &mut Bench) -> Result<(), BenchError> {
    let prefix = b.prefix("s");
    let env = factline_service::Env::from_process();
    let keys = factline_keystore::KeyConfig::from_env(&env)
        .map_err(|e| BenchError::KeyStore(format!("settings: {e}")))?;
    let pool = factline_service::postgres::pool(
        &b.args.database_url,
        &factline_service::postgres::PoolSettings::new("factline-bench-keys", 2),
    )
    .map_err(|e| BenchError::KeyStore(format!("database: {e}")))?;
    let crypto = factline_keystore::field_crypto(&keys, pool)
        .map_err(|e| BenchError::KeyStore(e.to_string()))?
        .with_subject_prefix(&prefix);
    let records = encode_backlog(b, &prefix, pg_backlog(b), Some(&crypto)).await?;
    let brokers = b.args.kafka_brokers.clone();
    let produced = kafka::blocking(move || kafka::produce_raw(&brokers, &records)).await?;
    b.sealed_ends = produced.ends;
    Ok(())
}
