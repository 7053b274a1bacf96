//! `order_summary`: one row per order with its lifecycle, amounts and shipping details.
//!
//! Order-safe: the row is a pure, commutative merge of the facts seen so far ([`merge`]), so
//! events may arrive in any order (an `OrderShipped` before its `OrderPlaced` is kept) and older
//! data never overwrites newer. Each fact keeps its own timestamp:
//! - placement (customer, currency, total, item count, `placed_at`): the latest `placed_at` wins;
//! - shipment (carrier, tracking id, `shipped_at`): the latest `shipped_at` wins (re-shipping);
//! - `delivered_at`: the latest delivery;
//! - cancellation (`cancelled_at`, reason): the earliest cancellation;
//! - `updated_at`: the latest `occurred_at` of any applied event (never the wall clock).
//!
//! Status is the furthest lifecycle state known: `delivered` if delivered, else `cancelled` if
//! cancelled, else `shipped`, else `placed`. A delivered order stays `delivered` even if a
//! cancellation arrives (it is recorded in `cancelled_at`, the goods were handed over);
//! a cancellation overrides `placed` and `shipped`. `item_count` is the number of units (sum of
//! quantities). An `OrderPlaced` whose `total_cents` is not the sum of its lines, or with a
//! non-positive quantity, is rejected (dead-lettered).
//!
//! Each row also remembers the ids of the events applied to it (`applied_ids`, see
//! [`AppliedIds`]) and skips an event it already holds, so the runtime keeps no row per event in
//! its applied-id table: most of PostgreSQL's work per event. The column is bookkeeping, not
//! part of the read model: the read API does not serve it.
//!
//! The projection reads no personal data ([`Projection::reads_personal_data`] is `false`): an
//! order's shipping address stays sealed, and the projector never fetches a data key.
//!
//! A batch is written in one statement for most orders: the merge above, written again in SQL
//! (`merge_upsert`), folds each order's events of the batch into its stored row without
//! reading it first. An order with many events in the batch, or one whose row already holds
//! one of their ids (a duplicate), is read, merged in memory and written back instead
//! (`merge_in_memory`). Both give the same row; `tests/order_summary_merge.rs` checks it
//! against PostgreSQL.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use factline_schemas::Envelope;
use serde::Deserialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Row, Transaction};

use crate::error::ProjectionError;
use crate::postgres::{AppliedIds, APPLIED_IDS_MAX};
use crate::projection::{versioned_table, AppliedIdsColumn, Event, Migration, Projection};

/// The projector name.
pub const NAME: &str = "order_summary";
/// The read model's version.
pub const VERSION: u32 = 1;

/// The `order_summary` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderSummaryProjection;

/// An order's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Placed, not shipped.
    Placed,
    /// Shipped, not delivered.
    Shipped,
    /// Delivered.
    Delivered,
    /// Cancelled before delivery.
    Cancelled,
}

impl Status {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Placed => "placed",
            Status::Shipped => "shipped",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One row of `order_summary`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderSummary {
    /// The order id.
    pub order_id: String,
    /// The customer, once `OrderPlaced` is known.
    pub customer_id: Option<String>,
    /// The currency code.
    pub currency: Option<String>,
    /// The order total in cents.
    pub total_cents: Option<i64>,
    /// Units ordered (sum of quantities).
    pub item_count: Option<i64>,
    /// When it was placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// When it was (last) shipped.
    pub shipped_at: Option<DateTime<Utc>>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was (first) cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// The carrier.
    pub carrier: Option<String>,
    /// The tracking id.
    pub tracking_id: Option<String>,
    /// The latest `occurred_at` of the events applied.
    pub updated_at: Option<DateTime<Utc>>,
}

impl OrderSummary {
    /// The furthest lifecycle state known (see the module docs).
    pub fn status(&self) -> Status {
        if self.delivered_at.is_some() {
            Status::Delivered
        } else if self.cancelled_at.is_some() {
            Status::Cancelled
        } else if self.shipped_at.is_some() {
            Status::Shipped
        } else {
            Status::Placed
        }
    }
}

/// A line of an `OrderPlaced`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LineItem {
    /// Units.
    pub quantity: i64,
    /// Price per unit in cents.
    pub unit_price_cents: i64,
}

/// The events this projection reads.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    /// `OrderPlaced`.
    Placed {
        /// Order id.
        order_id: String,
        /// Customer id.
        customer_id: String,
        /// Currency code.
        currency: String,
        /// Lines.
        items: Vec<LineItem>,
        /// Total in cents.
        total_cents: i64,
        /// When.
        placed_at: DateTime<Utc>,
    },
    /// `OrderShipped`.
    Shipped {
        /// Order id.
        order_id: String,
        /// Carrier.
        carrier: String,
        /// Tracking id.
        tracking_id: String,
        /// When.
        shipped_at: DateTime<Utc>,
    },
    /// `OrderDelivered`.
    Delivered {
        /// Order id.
        order_id: String,
        /// When.
        delivered_at: DateTime<Utc>,
    },
    /// `OrderCancelled`.
    Cancelled {
        /// Order id.
        order_id: String,
        /// Why.
        reason: String,
        /// When.
        cancelled_at: DateTime<Utc>,
    },
}

#[derive(Deserialize)]
struct Placed {
    order_id: String,
    customer_id: String,
    currency: String,
    items: Vec<LineItem>,
    total_cents: i64,
    placed_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Shipped {
    order_id: String,
    carrier: String,
    tracking_id: String,
    shipped_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Delivered {
    order_id: String,
    delivered_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Cancelled {
    order_id: String,
    reason: String,
    cancelled_at: DateTime<Utc>,
}

impl OrderEvent {
    /// Reads and validates an event; invalid ones are permanent errors.
    pub fn from_event(event: &Event) -> Result<OrderEvent, ProjectionError> {
        let parsed = match event.event_type() {
            "OrderPlaced" => {
                let p: Placed = event.parse()?;
                OrderEvent::Placed {
                    order_id: p.order_id,
                    customer_id: p.customer_id,
                    currency: p.currency,
                    items: p.items,
                    total_cents: p.total_cents,
                    placed_at: p.placed_at,
                }
            }
            "OrderShipped" => {
                let s: Shipped = event.parse()?;
                OrderEvent::Shipped {
                    order_id: s.order_id,
                    carrier: s.carrier,
                    tracking_id: s.tracking_id,
                    shipped_at: s.shipped_at,
                }
            }
            "OrderDelivered" => {
                let d: Delivered = event.parse()?;
                OrderEvent::Delivered {
                    order_id: d.order_id,
                    delivered_at: d.delivered_at,
                }
            }
            "OrderCancelled" => {
                let c: Cancelled = event.parse()?;
                OrderEvent::Cancelled {
                    order_id: c.order_id,
                    reason: c.reason,
                    cancelled_at: c.cancelled_at,
                }
            }
            other => {
                return Err(ProjectionError::permanent(format!(
                    "order_summary does not consume {other}"
                )))
            }
        };
        parsed.validate()?;
        Ok(parsed)
    }

    /// Rejects what no order can be: non-positive quantities, a total that is not the sum.
    pub fn validate(&self) -> Result<(), ProjectionError> {
        if let OrderEvent::Placed {
            items, total_cents, ..
        } = self
        {
            if items.iter().any(|i| i.quantity <= 0) {
                return Err(ProjectionError::permanent(
                    "a line item has a non-positive quantity",
                ));
            }
            let sum = items.iter().try_fold(0i64, |acc, i| {
                i.quantity
                    .checked_mul(i.unit_price_cents)
                    .and_then(|line| acc.checked_add(line))
            });
            if sum != Some(*total_cents) {
                return Err(ProjectionError::permanent(format!(
                    "total_cents {total_cents} is not the sum of the line items"
                )));
            }
        }
        Ok(())
    }

    /// The order id.
    pub fn order_id(&self) -> &str {
        match self {
            OrderEvent::Placed { order_id, .. }
            | OrderEvent::Shipped { order_id, .. }
            | OrderEvent::Delivered { order_id, .. }
            | OrderEvent::Cancelled { order_id, .. } => order_id,
        }
    }
}

/// Merges one event into the row (pure, commutative, idempotent; see the module docs).
pub fn merge(
    row: Option<OrderSummary>,
    event: &OrderEvent,
    occurred_at: DateTime<Utc>,
) -> OrderSummary {
    let mut row = row.unwrap_or_else(|| OrderSummary {
        order_id: event.order_id().to_owned(),
        ..OrderSummary::default()
    });
    match event {
        OrderEvent::Placed {
            customer_id,
            currency,
            items,
            total_cents,
            placed_at,
            ..
        } => {
            let item_count: i64 = items.iter().map(|i| i.quantity).sum();
            let new = (
                *placed_at,
                customer_id.clone(),
                currency.clone(),
                *total_cents,
                item_count,
            );
            let newer = match (&row.placed_at, &row.customer_id, &row.currency) {
                (Some(at), Some(customer), Some(cur)) => {
                    new > (
                        *at,
                        customer.clone(),
                        cur.clone(),
                        row.total_cents.unwrap_or_default(),
                        row.item_count.unwrap_or_default(),
                    )
                }
                _ => true,
            };
            if newer {
                row.placed_at = Some(new.0);
                row.customer_id = Some(new.1);
                row.currency = Some(new.2);
                row.total_cents = Some(new.3);
                row.item_count = Some(new.4);
            }
        }
        OrderEvent::Shipped {
            carrier,
            tracking_id,
            shipped_at,
            ..
        } => {
            let new = (*shipped_at, carrier.clone(), tracking_id.clone());
            let newer = match (&row.shipped_at, &row.carrier, &row.tracking_id) {
                (Some(at), Some(c), Some(t)) => new > (*at, c.clone(), t.clone()),
                _ => true,
            };
            if newer {
                row.shipped_at = Some(new.0);
                row.carrier = Some(new.1);
                row.tracking_id = Some(new.2);
            }
        }
        OrderEvent::Delivered { delivered_at, .. } => {
            row.delivered_at = row.delivered_at.max(Some(*delivered_at));
        }
        OrderEvent::Cancelled {
            reason,
            cancelled_at,
            ..
        } => {
            let new = (*cancelled_at, reason.clone());
            let earlier = match (&row.cancelled_at, &row.cancel_reason) {
                (Some(at), Some(r)) => new < (*at, r.clone()),
                _ => true,
            };
            if earlier {
                row.cancelled_at = Some(new.0);
                row.cancel_reason = Some(new.1);
            }
        }
    }
    row.updated_at = row.updated_at.max(Some(occurred_at));
    row
}

/// One column of the table: its name and type, the batch's values of it as one array
/// parameter (for `unnest`), and how a selected value goes back into the row.
struct Column {
    name: &'static str,
    sql_type: &'static str,
    constraint: &'static str,
    values: fn(&[&OrderSummary]) -> Box<dyn ToSql + Sync + Send>,
    read: fn(&mut OrderSummary, &Row, usize),
}

/// A column holding the row's field of the same name.
macro_rules! column {
    ($field:ident, $sql_type:literal $(, $constraint:literal)?) => {
        Column {
            name: stringify!($field),
            sql_type: $sql_type,
            constraint: concat!("" $(, $constraint)?),
            values: |rows| Box::new(rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()),
            read: |summary, row, i| summary.$field = row.get(i),
        }
    };
}

/// Every column, in table order: the one list the table, the read and the upsert are made of.
const COLUMNS: [Column; 14] = [
    column!(order_id, "text", "PRIMARY KEY"),
    column!(customer_id, "text"),
    Column {
        name: "status",
        sql_type: "text",
        constraint: "NOT NULL",
        values: |rows| Box::new(rows.iter().map(|r| r.status().as_str()).collect::<Vec<_>>()),
        read: |_, _, _| {}, // derived from the timestamps
    },
    column!(currency, "text"),
    column!(total_cents, "bigint"),
    column!(item_count, "bigint"),
    column!(placed_at, "timestamptz"),
    column!(shipped_at, "timestamptz"),
    column!(delivered_at, "timestamptz"),
    column!(cancelled_at, "timestamptz"),
    column!(cancel_reason, "text"),
    column!(carrier, "text"),
    column!(tracking_id, "text"),
    column!(updated_at, "timestamptz"),
];

/// The array type of a column's values as one parameter. The statements are sent with their
/// parameter types (`query_typed`): one round trip each, instead of a prepare and an execute.
fn array_of(sql_type: &str) -> Type {
    match sql_type {
        "text" => Type::TEXT_ARRAY,
        "bigint" => Type::INT8_ARRAY,
        "timestamptz" => Type::TIMESTAMPTZ_ARRAY,
        other => unreachable!("no array type for the column type {other}"),
    }
}

/// The column names, comma-separated.
fn names() -> String {
    COLUMNS.map(|c| c.name).join(", ")
}

/// The bookkeeping column after [`COLUMNS`]: the ids of the events applied to the row.
const APPLIED_IDS: &str = "applied_ids";

fn from_row(row: &Row) -> OrderSummary {
    let mut summary = OrderSummary::default();
    for (i, column) in COLUMNS.iter().enumerate() {
        (column.read)(&mut summary, row, i);
    }
    summary
}

impl Projection for OrderSummaryProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn topics(&self) -> Vec<String> {
        vec!["orders".into()]
    }

    fn event_types(&self) -> Vec<String> {
        [
            "OrderPlaced",
            "OrderShipped",
            "OrderDelivered",
            "OrderCancelled",
        ]
        .map(String::from)
        .to_vec()
    }

    fn migrations(&self) -> Vec<Migration> {
        let table = versioned_table(NAME, VERSION);
        vec![
            Migration::new(
                "001_create",
                format!(
                    "CREATE TABLE {table} ({});
                    CREATE INDEX {table}_customer ON {table} (customer_id, placed_at);",
                    COLUMNS
                        .map(|c| format!("{} {} {}", c.name, c.sql_type, c.constraint))
                        .join(", ")
                ),
            ),
            Migration::new(
                "002_applied_ids",
                format!(
                    "ALTER TABLE {table} \
                     ADD COLUMN IF NOT EXISTS {APPLIED_IDS} bytea NOT NULL DEFAULT '\\x'"
                ),
            ),
        ]
    }

    fn applied_ids_in_rows(&self) -> Option<AppliedIdsColumn> {
        Some(AppliedIdsColumn {
            view: NAME,
            key: "order_id",
        })
    }

    fn views(&self) -> Vec<String> {
        vec![NAME.into()]
    }

    /// None of an order's personal fields (its shipping address) is part of its summary.
    fn reads_personal_data(&self) -> bool {
        false
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        self.apply_batch(tx, &[event]).await
    }

    /// The batch's events grouped by order: orders with at most [`FAST_MAX_EVENTS`] events in
    /// one upsert that merges in SQL (`merge_upsert`); the rest, and every order that
    /// upsert skipped (an id the row already holds, or a full `applied_ids`), read, merged in
    /// memory and written back (`merge_in_memory`).
    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[&Event],
    ) -> Result<(), ProjectionError> {
        let parsed = events
            .iter()
            .map(|e| Ok((OrderEvent::from_event(e)?, &e.envelope)))
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        // each order's events in log order; orders by id, the order their rows are locked in
        let mut orders: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (event, _)) in parsed.iter().enumerate() {
            orders.entry(event.order_id()).or_default().push(i);
        }
        let mut in_memory: Vec<usize> = Vec::new();
        let mut fast: Vec<(&str, OrderSummary, Vec<u8>)> = Vec::with_capacity(orders.len());
        for (order, indices) in &orders {
            if indices.len() > FAST_MAX_EVENTS {
                in_memory.extend(indices);
                continue;
            }
            let (mut row, mut ids) = (None, Vec::with_capacity(16 * indices.len()));
            for &i in indices {
                let (event, envelope) = &parsed[i];
                let id = envelope.event_id.as_bytes();
                if ids.chunks_exact(16).any(|kept| kept == id) {
                    continue;
                }
                ids.extend_from_slice(id);
                row = Some(merge(row, event, envelope.occurred_at));
            }
            if let Some(row) = row {
                fast.push((order, row, ids));
            }
        }
        if !fast.is_empty() {
            let rows: Vec<&OrderSummary> = fast.iter().map(|(_, row, _)| row).collect();
            let ids: Vec<&[u8]> = fast.iter().map(|(_, _, ids)| ids.as_slice()).collect();
            let values = column_values(&rows);
            let mut params = typed(&values);
            params.push((&ids, Type::BYTEA_ARRAY));
            let written: HashSet<String> = tx
                .query_typed(&MERGE_UPSERT, &params)
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for (order, _, _) in &fast {
                if !written.contains(*order) {
                    in_memory.extend(&orders[order]);
                }
            }
        }
        if in_memory.is_empty() {
            return Ok(());
        }
        in_memory.sort_unstable();
        let rest: Vec<(&OrderEvent, &Envelope)> =
            in_memory.iter().map(|&i| (&parsed[i].0, parsed[i].1)).collect();
        merge_in_memory(tx, &rest).await
    }
}

/// The most events of one order a batch may hold for the order to take the SQL merge: one
/// guard per event id in `merge_upsert`.
pub const FAST_MAX_EVENTS: usize = 4;

/// The table's values of `rows`, one array per column of [`COLUMNS`].
fn column_values(rows: &[&OrderSummary]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    COLUMNS.iter().map(|c| (c.values)(rows)).collect()
}

/// `values` as typed parameters (see [`array_of`]).
fn typed(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    values
        .iter()
        .zip(&COLUMNS)
        .map(|(v, c)| (v.as_ref() as &(dyn ToSql + Sync), array_of(c.sql_type)))
        .collect()
}

/// `$1::text[], $2::text[], ...`: the columns as `unnest` arguments.
fn unnest_arguments() -> String {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statement of `merge_upsert`, made once.
static MERGE_UPSERT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| merge_upsert(&versioned_table(NAME, VERSION)));

/// One upsert that merges each given row (the merge of an order's events in the batch) into
/// the stored one in SQL, as [`merge`] does in memory: each fact by its own timestamp, text
/// compared byte by byte (`COLLATE "C"`, as Rust compares strings). A stored row is updated
/// only if none of the given ids is in its `applied_ids` and the ids still fit
/// ([`APPLIED_IDS_MAX`]); the new ids are appended. Returns the ids of the orders written:
/// the others are left to `merge_in_memory`. (`position` finds an id at any byte offset: a
/// match across two ids only sends the order the slow way.)
fn merge_upsert(table: &str) -> String {
    let placement_newer = "EXCLUDED.placed_at IS NOT NULL AND (t.placed_at IS NULL \
        OR t.customer_id IS NULL OR t.currency IS NULL \
        OR (EXCLUDED.placed_at, EXCLUDED.customer_id COLLATE \"C\", EXCLUDED.currency COLLATE \"C\", \
            EXCLUDED.total_cents, EXCLUDED.item_count) \
         > (t.placed_at, t.customer_id COLLATE \"C\", t.currency COLLATE \"C\", \
            coalesce(t.total_cents, 0), coalesce(t.item_count, 0)))";
    let shipment_newer = "EXCLUDED.shipped_at IS NOT NULL AND (t.shipped_at IS NULL \
        OR t.carrier IS NULL OR t.tracking_id IS NULL \
        OR (EXCLUDED.shipped_at, EXCLUDED.carrier COLLATE \"C\", EXCLUDED.tracking_id COLLATE \"C\") \
         > (t.shipped_at, t.carrier COLLATE \"C\", t.tracking_id COLLATE \"C\"))";
    let cancellation_earlier = "EXCLUDED.cancelled_at IS NOT NULL AND (t.cancelled_at IS NULL \
        OR t.cancel_reason IS NULL \
        OR (EXCLUDED.cancelled_at, EXCLUDED.cancel_reason COLLATE \"C\") \
         < (t.cancelled_at, t.cancel_reason COLLATE \"C\"))";
    let pick = |when: &str, columns: &[&str]| {
        columns
            .iter()
            .map(|c| format!("{c} = CASE WHEN {when} THEN EXCLUDED.{c} ELSE t.{c} END"))
            .collect::<Vec<_>>()
    };
    let mut sets = Vec::new();
    sets.extend(pick(
        placement_newer,
        &["customer_id", "currency", "total_cents", "item_count", "placed_at"],
    ));
    sets.extend(pick(shipment_newer, &["carrier", "tracking_id", "shipped_at"]));
    sets.extend(pick(cancellation_earlier, &["cancel_reason", "cancelled_at"]));
    sets.push("delivered_at = GREATEST(t.delivered_at, EXCLUDED.delivered_at)".into());
    sets.push("updated_at = GREATEST(t.updated_at, EXCLUDED.updated_at)".into());
    // as OrderSummary::status, from the merged timestamps
    sets.push(format!(
        "status = CASE \
           WHEN t.delivered_at IS NOT NULL OR EXCLUDED.delivered_at IS NOT NULL THEN '{}' \
           WHEN t.cancelled_at IS NOT NULL OR EXCLUDED.cancelled_at IS NOT NULL THEN '{}' \
           WHEN t.shipped_at IS NOT NULL OR EXCLUDED.shipped_at IS NOT NULL THEN '{}' \
           ELSE '{}' END",
        Status::Delivered.as_str(),
        Status::Cancelled.as_str(),
        Status::Shipped.as_str(),
        Status::Placed.as_str(),
    ));
    sets.push(format!("{APPLIED_IDS} = t.{APPLIED_IDS} || EXCLUDED.{APPLIED_IDS}"));
    let mut guards = vec![format!(
        "length(t.{APPLIED_IDS}) + length(EXCLUDED.{APPLIED_IDS}) <= {}",
        16 * APPLIED_IDS_MAX
    )];
    guards.extend((0..FAST_MAX_EVENTS).map(|j| {
        format!(
            "(length(EXCLUDED.{APPLIED_IDS}) <= {} \
              OR position(substring(EXCLUDED.{APPLIED_IDS} from {} for 16) in t.{APPLIED_IDS}) = 0)",
            16 * j,
            16 * j + 1
        )
    }));
    format!(
        "INSERT INTO {table} AS t ({names}, {APPLIED_IDS}) \
         SELECT * FROM unnest({unnest}, ${n}::bytea[]) \
         ON CONFLICT (order_id) DO UPDATE SET {sets} \
         WHERE {guards} \
         RETURNING order_id",
        names = names(),
        unnest = unnest_arguments(),
        n = COLUMNS.len() + 1,
        sets = sets.join(", "),
        guards = guards.join(" AND "),
    )
}

/// One read of every order of `events`, the merges in memory (an event whose id the row
/// holds is skipped), one upsert. For the orders `merge_upsert` does not take.
async fn merge_in_memory(
    tx: &Transaction<'_>,
    events: &[(&OrderEvent, &Envelope)],
) -> Result<(), ProjectionError> {
    let mut ids: Vec<String> = events.iter().map(|(e, _)| e.order_id().to_owned()).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let table = versioned_table(NAME, VERSION);
    let mut rows: HashMap<String, (OrderSummary, AppliedIds)> = tx
        .query_typed(
            &format!(
                "SELECT {}, {APPLIED_IDS} FROM {table} WHERE order_id = ANY($1) \
                 ORDER BY order_id FOR UPDATE",
                names()
            ),
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await?
        .iter()
        .map(|row| {
            let summary = from_row(row);
            let applied: AppliedIds = row.get(COLUMNS.len());
            (summary.order_id.clone(), (summary, applied))
        })
        .collect();
    // room for every order of the batch at once, not grown (and copied) insert by insert
    rows.reserve(ids.len().saturating_sub(rows.len()));
    let mut changed: Vec<&str> = Vec::with_capacity(ids.len());
    for (event, envelope) in events {
        let (current, mut applied) = match rows.remove(event.order_id()) {
            Some((row, applied)) => (Some(row), applied),
            None => (None, AppliedIds::default()),
        };
        if applied.contains(&envelope.event_id) {
            // a duplicate the row already holds: nothing to write for it
            if let Some(row) = current {
                rows.insert(row.order_id.clone(), (row, applied));
            }
            continue;
        }
        applied.insert(envelope.event_id);
        let merged = merge(current, event, envelope.occurred_at);
        rows.insert(merged.order_id.clone(), (merged, applied));
        changed.push(event.order_id());
    }
    changed.sort_unstable();
    changed.dedup();
    if changed.is_empty() {
        return Ok(());
    }
    let (rows, applied): (Vec<&OrderSummary>, Vec<&AppliedIds>) = changed
        .iter()
        .filter_map(|id| rows.get(*id).map(|(row, applied)| (row, applied)))
        .unzip();
    let update = COLUMNS[1..]
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let values = column_values(&rows);
    let mut params = typed(&values);
    params.push((&applied, Type::BYTEA_ARRAY));
    tx.execute_typed(
        &format!(
            "INSERT INTO {table} ({names}, {APPLIED_IDS}) \
             SELECT * FROM unnest({unnest}, ${}::bytea[]) \
             ON CONFLICT (order_id) DO UPDATE SET {update}, \
               {APPLIED_IDS} = EXCLUDED.{APPLIED_IDS}",
            COLUMNS.len() + 1,
            names = names(),
            unnest = unnest_arguments(),
        ),
        &params,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn placed(total: i64, t: i64) -> OrderEvent {
        OrderEvent::Placed {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: vec![LineItem {
                quantity: 2,
                unit_price_cents: total / 2,
            }],
            total_cents: total,
            placed_at: at(t),
        }
    }
    fn shipped(tracking: &str, t: i64) -> OrderEvent {
        OrderEvent::Shipped {
            order_id: "o-1".into(),
            carrier: "DHL".into(),
            tracking_id: tracking.into(),
            shipped_at: at(t),
        }
    }
    fn delivered(t: i64) -> OrderEvent {
        OrderEvent::Delivered {
            order_id: "o-1".into(),
            delivered_at: at(t),
        }
    }
    fn cancelled(t: i64) -> OrderEvent {
        OrderEvent::Cancelled {
            order_id: "o-1".into(),
            reason: "changed my mind".into(),
            cancelled_at: at(t),
        }
    }
    fn fold(events: &[(OrderEvent, i64)]) -> OrderSummary {
        events
            .iter()
            .fold(None, |row, (e, t)| Some(merge(row, e, at(*t))))
            .unwrap()
    }

    #[test]
    fn given_events_expect_rows() {
        // (events, expected status, expected tracking id)
        type Case = (Vec<(OrderEvent, i64)>, Status, Option<&'static str>);
        let cases: Vec<Case> = vec![
            (vec![(placed(900, 0), 0)], Status::Placed, None),
            (
                vec![(placed(900, 0), 0), (shipped("T1", 5), 5)],
                Status::Shipped,
                Some("T1"),
            ),
            (
                vec![(shipped("T1", 5), 5), (placed(900, 0), 0)],
                Status::Shipped,
                Some("T1"),
            ),
            (
                vec![(placed(900, 0), 0), (cancelled(3), 3)],
                Status::Cancelled,
                None,
            ),
            (
                vec![
                    (placed(900, 0), 0),
                    (shipped("T1", 5), 5),
                    (cancelled(6), 6),
                ],
                Status::Cancelled,
                Some("T1"),
            ),
            (
                vec![(delivered(9), 9), (cancelled(6), 6), (placed(900, 0), 0)],
                Status::Delivered,
                None,
            ),
            (
                vec![(shipped("T2", 8), 8), (shipped("T1", 5), 5)],
                Status::Shipped,
                Some("T2"),
            ),
        ];
        for (events, status, tracking) in cases {
            let row = fold(&events);
            assert_eq!(row.status(), status, "{events:?}");
            assert_eq!(row.tracking_id.as_deref(), tracking, "{events:?}");
            let latest = events.iter().map(|(_, t)| *t).max().unwrap();
            assert_eq!(row.updated_at, Some(at(latest)));
        }
    }

    #[test]
    fn every_column_has_the_array_type_of_its_sql_type() {
        for column in &COLUMNS {
            let array = array_of(column.sql_type);
            assert_eq!(array.name(), format!("_{}", match column.sql_type {
                "bigint" => "int8",
                other => other,
            }));
        }
    }

    #[test]
    fn shipped_before_placed_keeps_both() {
        let row = fold(&[(shipped("T1", 5), 5), (placed(900, 0), 0)]);
        assert_eq!(row.total_cents, Some(900));
        assert_eq!(row.item_count, Some(2));
        assert_eq!(row.customer_id.as_deref(), Some("c-1"));
        assert_eq!(row.carrier.as_deref(), Some("DHL"));
    }

    #[test]
    fn rejects_a_wrong_total_and_bad_quantities() {
        let mut bad = placed(900, 0);
        if let OrderEvent::Placed { total_cents, .. } = &mut bad {
            *total_cents = 901;
        }
        assert!(!bad.validate().unwrap_err().is_transient());
        let zero = OrderEvent::Placed {
            order_id: "o".into(),
            customer_id: "c".into(),
            currency: "EUR".into(),
            items: vec![LineItem {
                quantity: 0,
                unit_price_cents: 1,
            }],
            total_cents: 0,
            placed_at: at(0),
        };
        assert!(zero.validate().is_err());
        assert!(placed(900, 0).validate().is_ok());
    }

    fn any_event() -> impl Strategy<Value = (OrderEvent, i64)> {
        prop_oneof![
            (0i64..5, 1i64..50).prop_map(|(t, p)| (placed(p * 2, t), t)),
            (0i64..20, "[AB]").prop_map(|(t, s)| (shipped(&s, t), t)),
            (0i64..20).prop_map(|t| (delivered(t), t)),
            (0i64..20).prop_map(|t| (cancelled(t), t)),
        ]
    }

    proptest! {
        #[test]
        fn any_order_and_duplicates_give_the_same_row(
            events in proptest::collection::vec(any_event(), 1..8),
            seed in any::<u64>(),
        ) {
            let expected = fold(&events);
            let mut shuffled = events.clone();
            // a deterministic shuffle plus a duplicate of every event
            let n = shuffled.len();
            for i in 0..n {
                let j = ((seed >> (i % 32)) as usize + i * 7) % n;
                shuffled.swap(i, j);
            }
            shuffled.extend(events.iter().cloned());
            prop_assert_eq!(fold(&shuffled), expected);
        }
    }
}
