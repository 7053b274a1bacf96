//! PostgreSQL side of the bench: a fresh schema per run (every service started by the bench
//! selects it through `options=-csearch_path`), the raw sink limit — the `order_summary` rows
//! the projector writes, one row write per event, upserted in batches with one multi-row
//! `INSERT … SELECT unnest(…) ON CONFLICT DO UPDATE` per transaction — and the wait on the
//! projectors' stored positions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use factline_projectors::projections::order_summary::OrderSummary;
use tokio_postgres::{Client, NoTls};

/// A PostgreSQL failure of the bench.
#[derive(Debug, thiserror::Error)]
pub enum PgBenchError {
    /// The database failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A projector did not reach the end of its topics in time.
    #[error("{projector} did not catch up ({done} of {total} events applied; stuck, exited or over {seconds} s)")]
    NotCaughtUp {
        /// Projector.
        projector: String,
        /// Time limit.
        seconds: u64,
        /// Events applied.
        done: i64,
        /// Events to apply.
        total: i64,
    },
}

/// Connects to `url`.
pub async fn connect(url: &str) -> Result<Client, PgBenchError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// Creates schema `schema` and returns a URL that selects it.
pub async fn fresh_schema(base: &str, schema: &str) -> Result<String, PgBenchError> {
    let client = connect(base).await?;
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .await?;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}

/// Drops the bench schema (best effort).
pub async fn drop_schema(base: &str, schema: &str) {
    match connect(base).await {
        Ok(client) => {
            if let Err(error) = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await
            {
                tracing::warn!(%error, "cannot drop the bench schema");
            }
        }
        Err(error) => tracing::warn!(%error, "cannot drop the bench schema"),
    }
}

/// The raw sink's table: the projector's `order_summary` DDL.
pub const RAW_TABLE_DDL: &str = "CREATE TABLE IF NOT EXISTS bench_raw_order_summary (
    order_id text PRIMARY KEY, customer_id text, status text NOT NULL, currency text,
    total_cents bigint, item_count bigint, placed_at timestamptz, shipped_at timestamptz,
    delivered_at timestamptz, cancelled_at timestamptz, cancel_reason text, carrier text,
    tracking_id text, updated_at timestamptz);
    CREATE INDEX IF NOT EXISTS bench_raw_order_summary_customer
        ON bench_raw_order_summary (customer_id, placed_at);";

const RAW_UPSERT: &str = "INSERT INTO bench_raw_order_summary (order_id, customer_id, status, \
    currency, total_cents, item_count, placed_at, shipped_at, delivered_at, cancelled_at, \
    cancel_reason, carrier, tracking_id, updated_at) \
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], \
      $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], \
      $12::text[], $13::text[], $14::timestamptz[]) \
    ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
      status = EXCLUDED.status, currency = EXCLUDED.currency, total_cents = EXCLUDED.total_cents, \
      item_count = EXCLUDED.item_count, placed_at = EXCLUDED.placed_at, \
      shipped_at = EXCLUDED.shipped_at, delivered_at = EXCLUDED.delivered_at, \
      cancelled_at = EXCLUDED.cancelled_at, cancel_reason = EXCLUDED.cancel_reason, \
      carrier = EXCLUDED.carrier, tracking_id = EXCLUDED.tracking_id, \
      updated_at = EXCLUDED.updated_at";

/// Column arrays of one batch.
#[derive(Default)]
struct Columns {
    order_id: Vec<String>,
    customer_id: Vec<Option<String>>,
    status: Vec<String>,
    currency: Vec<Option<String>>,
    total_cents: Vec<Option<i64>>,
    item_count: Vec<Option<i64>>,
    placed_at: Vec<Option<DateTime<Utc>>>,
    shipped_at: Vec<Option<DateTime<Utc>>>,
    delivered_at: Vec<Option<DateTime<Utc>>>,
    cancelled_at: Vec<Option<DateTime<Utc>>>,
    cancel_reason: Vec<Option<String>>,
    carrier: Vec<Option<String>>,
    tracking_id: Vec<Option<String>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns {
    fn push(&mut self, row: &OrderSummary) {
        self.order_id.push(row.order_id.clone());
        self.customer_id.push(row.customer_id.clone());
        self.status.push(row.status().as_str().to_owned());
        self.currency.push(row.currency.clone());
        self.total_cents.push(row.total_cents);
        self.item_count.push(row.item_count);
        self.placed_at.push(row.placed_at);
        self.shipped_at.push(row.shipped_at);
        self.delivered_at.push(row.delivered_at);
        self.cancelled_at.push(row.cancelled_at);
        self.cancel_reason.push(row.cancel_reason.clone());
        self.carrier.push(row.carrier.clone());
        self.tracking_id.push(row.tracking_id.clone());
        self.updated_at.push(row.updated_at);
    }
}

/// What the raw sink achieved.
#[derive(Debug, Clone)]
pub struct Upserted {
    /// Row writes (one per event).
    pub rows: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Time spent in the database (row preparation excluded).
    pub elapsed: Duration,
}

/// Upserts the rows `rows` yields, in transactions of at most `batch` rows whose order ids are
/// distinct (a multi-row upsert cannot touch a row twice). Only database time is counted.
pub async fn upsert_raw(
    url: &str,
    rows: impl Iterator<Item = OrderSummary>,
    batch: usize,
) -> Result<Upserted, PgBenchError> {
    let mut client = connect(url).await?;
    client.batch_execute(RAW_TABLE_DDL).await?;
    let statement = client.prepare(RAW_UPSERT).await?;
    let mut result = Upserted {
        rows: 0,
        batches: 0,
        elapsed: Duration::ZERO,
    };
    let mut columns = Columns::default();
    let mut keys = std::collections::HashSet::new();
    let mut rows = rows.peekable();
    loop {
        let next = rows.peek();
        let full = columns.order_id.len() >= batch
            || next.is_some_and(|r| keys.contains(&r.order_id))
            || (next.is_none() && !columns.order_id.is_empty());
        if full {
            let c = std::mem::take(&mut columns);
            keys.clear();
            let started = Instant::now();
            let tx = client.transaction().await?;
            tx.execute(
                &statement,
                &[
                    &c.order_id,
                    &c.customer_id,
                    &c.status,
                    &c.currency,
                    &c.total_cents,
                    &c.item_count,
                    &c.placed_at,
                    &c.shipped_at,
                    &c.delivered_at,
                    &c.cancelled_at,
                    &c.cancel_reason,
                    &c.carrier,
                    &c.tracking_id,
                    &c.updated_at,
                ],
            )
            .await?;
            tx.commit().await?;
            result.elapsed += started.elapsed();
            result.rows += c.order_id.len() as u64;
            result.batches += 1;
            continue;
        }
        let Some(row) = rows.next() else { break };
        keys.insert(row.order_id.clone());
        columns.push(&row);
    }
    Ok(result)
}

/// Sum over `ends` of the stored next offsets of `projector` v`version` (capped at each end),
/// or `None` while no position is stored.
pub async fn applied(
    client: &Client,
    projector: &str,
    version: i32,
    ends: &HashMap<(String, i32), i64>,
) -> Result<Option<i64>, PgBenchError> {
    let rows = client
        .query(
            "SELECT topic, partition, next_offset FROM factline_projector_positions \
             WHERE projector = $1 AND version = $2",
            &[&projector, &version],
        )
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        // The table appears when the projector bootstraps.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    if rows.is_empty() {
        return Ok(None);
    }
    let stored: HashMap<(String, i32), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    Ok(Some(
        ends.iter()
            .map(|(tp, end)| stored.get(tp).copied().unwrap_or(0).min(*end))
            .sum(),
    ))
}

/// Progress of a catch-up.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// From `started` to the first stored position.
    pub first_position: Option<Duration>,
    /// From `started` to every end reached.
    pub elapsed: Duration,
}

/// How long positions may stand still before a catch-up counts as stuck.
const STALL: Duration = Duration::from_secs(120);

/// Waits until the stored positions of `projector` reach every end in `ends` (fails when the
/// process exits, nothing moves for two minutes, or `timeout` passes).
pub async fn wait_caught_up(
    url: &str,
    projector: &str,
    version: i32,
    ends: &HashMap<(String, i32), i64>,
    started: Instant,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<CatchUp, PgBenchError> {
    let client = connect(url).await?;
    let total: i64 = ends.values().sum();
    let mut first_position = None;
    let mut done = 0;
    let mut progressed = Instant::now();
    loop {
        if let Some(applied) = applied(&client, projector, version, ends).await? {
            first_position.get_or_insert_with(|| started.elapsed());
            if applied > done {
                progressed = Instant::now();
            }
            done = applied;
            if applied >= total {
                return Ok(CatchUp {
                    first_position,
                    elapsed: started.elapsed(),
                });
            }
        }
        // No stored position moving for this long: the projector is stuck (or stores its
        // positions elsewhere); do not wait for the full time limit.
        let stalled = progressed.elapsed() > STALL.min(timeout);
        if started.elapsed() > timeout || stalled || !alive() {
            return Err(PgBenchError::NotCaughtUp {
                projector: projector.to_owned(),
                seconds: timeout.as_secs(),
                done,
                total,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
