//! `order_summary`'s two ways of writing a batch give the row its in-memory [`merge`] gives,
//! against PostgreSQL: random logs of a few orders (ties on every timestamp, re-delivered
//! events, a copy carrying other content under the same id, orders with more events than fit
//! the SQL merge or than a row keeps ids of), cut into random batches, each applied in its own
//! transaction, its text columns in a collation that does not sort byte by byte. The expected row folds the log in memory, an id counting once (its first
//! delivery wins); the expected `applied_ids` are every id applied, or the largest
//! [`APPLIED_IDS_MAX`] of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use factline_projectors::postgres::{AppliedIds, APPLIED_IDS_MAX};
use factline_projectors::projections::order_summary::{
    merge, OrderEvent, OrderSummary, FAST_MAX_EVENTS,
};
use factline_projectors::projections::OrderSummaryProjection;
use factline_projectors::{versioned_table, Event, Origin, Projection};
use factline_schemas::Envelope;
use factline_testkit::postgres::{connect, fresh_schema};
use serde_json::{json, Value};
use uuid::Uuid;

/// A small deterministic generator (xorshift64*), so a failing case can be run again.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn at(seconds: u64) -> String {
    DateTime::<Utc>::from_timestamp(1_800_000_000 + seconds as i64, 0)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(id: Uuid, event_type: &str, order: &str, data: Value, occurred: u64) -> Event {
    Event {
        envelope: Envelope {
            event_id: id,
            event_type: event_type.into(),
            command_id: id,
            correlation_id: "c".into(),
            causation_id: None,
            occurred_at: DateTime::from_timestamp(1_800_000_000 + occurred as i64, 0).unwrap(),
            traceparent: None,
        },
        data,
        key: Some(order.into()),
        origin: Origin {
            topic: "orders".into(),
            partition: 0,
            offset: 0,
        },
        timestamp: None,
        headers: Default::default(),
    }
}

/// A random event of `order`: few distinct times and values, so ties are common.
fn random_event(rng: &mut Rng, order: &str) -> Event {
    let t = rng.below(4);
    let occurred = rng.below(6);
    let id = Uuid::from_u128(((rng.below(u64::MAX) as u128) << 64) | rng.below(u64::MAX) as u128);
    let pick = |rng: &mut Rng, options: &[&str]| {
        options[rng.below(options.len() as u64) as usize].to_owned()
    };
    match rng.below(4) {
        0 => {
            let quantity = 1 + rng.below(3) as i64;
            let price = 100 * (1 + rng.below(2) as i64);
            let data = json!({"order_id": order, "customer_id": pick(rng, &["c-1", "c-2", "c-ä"]),
                "currency": pick(rng, &["EUR", "GBP"]),
                "items": [{"sku": "s", "name": "n", "quantity": quantity, "unit_price_cents": price}],
                "total_cents": quantity * price, "placed_at": at(t),
                "shipping_address": {"line1": "x", "line2": null, "city": "y", "postal_code": "z", "country": "GB"}});
            event(id, "OrderPlaced", order, data, occurred)
        }
        1 => {
            let data = json!({"order_id": order, "carrier": pick(rng, &["DHL", "UPS", "dhl"]),
                "tracking_id": pick(rng, &["T1", "T2"]), "shipped_at": at(t)});
            event(id, "OrderShipped", order, data, occurred)
        }
        2 => event(
            id,
            "OrderDelivered",
            order,
            json!({"order_id": order, "delivered_at": at(t)}),
            occurred,
        ),
        _ => {
            let data = json!({"order_id": order, "reason": pick(rng, &["a", "b", "B"]),
                "cancelled_at": at(t)});
            event(id, "OrderCancelled", order, data, occurred)
        }
    }
}

/// A log of a few orders: random events, some delivered again later (some of those with
/// other content under the same id), one order now and then with more events than fit the
/// SQL merge in one batch or than a row keeps ids of.
fn random_log(rng: &mut Rng, case: usize) -> Vec<Event> {
    let orders: Vec<String> = (0..1 + rng.below(3))
        .map(|o| format!("o-{case}-{o}"))
        .collect();
    let long = rng.below(8) == 0;
    let count = if long {
        APPLIED_IDS_MAX as u64 + 6
    } else {
        1 + rng.below(3 * FAST_MAX_EVENTS as u64)
    };
    let mut log: Vec<Event> = Vec::new();
    for _ in 0..count {
        let order = &orders[rng.below(orders.len() as u64) as usize];
        let roll = rng.below(10);
        if roll < 2 && !log.is_empty() && !long {
            // delivered again: the same record, or (roll 1) other content under its id
            let original = &log[rng.below(log.len() as u64) as usize];
            let mut copy = original.clone();
            if roll == 1 {
                let mut other = random_event(rng, original.key.as_deref().unwrap());
                other.envelope.event_id = original.envelope.event_id;
                copy = other;
            }
            log.push(copy);
        } else {
            log.push(random_event(rng, order));
        }
    }
    log
}

/// What the rows must be: the log folded in memory, each id once (its first delivery).
fn expected(log: &[Event]) -> BTreeMap<String, (OrderSummary, BTreeSet<Uuid>)> {
    let mut rows: BTreeMap<String, (Option<OrderSummary>, BTreeSet<Uuid>)> = BTreeMap::new();
    for e in log {
        let parsed = OrderEvent::from_event(e).expect("a valid event");
        let (row, ids) = rows.entry(parsed.order_id().to_owned()).or_default();
        if ids.insert(e.envelope.event_id) {
            *row = Some(merge(row.take(), &parsed, e.envelope.occurred_at));
        }
    }
    rows.into_iter()
        .map(|(order, (row, ids))| {
            let kept = ids.into_iter().rev().take(APPLIED_IDS_MAX).collect();
            (order, (row.unwrap(), kept))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ways_of_writing_a_batch_give_the_rows_the_merge_gives() {
    let (_, url) = fresh_schema().await;
    let mut client = connect(&url).await;
    for migration in OrderSummaryProjection.migrations() {
        client.batch_execute(&migration.sql).await.unwrap();
    }
    let table = versioned_table("order_summary", 1);
    // text that sorts otherwise than byte by byte ("dhl" before "DHL"): the merge must not
    // depend on the database's collation
    client
        .batch_execute(&format!(
            "ALTER TABLE {table} {}",
            [
                "customer_id",
                "currency",
                "cancel_reason",
                "carrier",
                "tracking_id"
            ]
            .map(|c| format!("ALTER COLUMN {c} TYPE text COLLATE \"und-x-icu\""))
            .join(", ")
        ))
        .await
        .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut long_logs, mut copies) = (0, 0);
    for case in 0..300 {
        let log = random_log(&mut rng, case);
        long_logs += usize::from(log.len() > APPLIED_IDS_MAX);
        copies += log.len()
            - log
                .iter()
                .map(|e| e.envelope.event_id)
                .collect::<BTreeSet<_>>()
                .len();
        let mut rest: &[Event] = &log;
        while !rest.is_empty() {
            let take = 1 + rng.below(rest.len().min(2 * FAST_MAX_EVENTS + 2) as u64) as usize;
            let (batch, after) = rest.split_at(take);
            let refs: Vec<&Event> = batch.iter().collect();
            let tx = client.transaction().await.unwrap();
            OrderSummaryProjection
                .apply_batch(&tx, &refs)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            rest = after;
        }
        for (order, (row, ids)) in expected(&log) {
            let got = client
                .query_one(
                    &format!(
                        "SELECT customer_id, currency, total_cents, item_count, placed_at, \
                         shipped_at, delivered_at, cancelled_at, cancel_reason, carrier, \
                         tracking_id, updated_at, status, applied_ids FROM {table} \
                         WHERE order_id = $1"
                    ),
                    &[&order],
                )
                .await
                .unwrap();
            let stored = OrderSummary {
                order_id: order.clone(),
                customer_id: got.get(0),
                currency: got.get(1),
                total_cents: got.get(2),
                item_count: got.get(3),
                placed_at: got.get(4),
                shipped_at: got.get(5),
                delivered_at: got.get(6),
                cancelled_at: got.get(7),
                cancel_reason: got.get(8),
                carrier: got.get(9),
                tracking_id: got.get(10),
                updated_at: got.get(11),
            };
            assert_eq!(stored, row, "case {case}, order {order}: {log:#?}");
            assert_eq!(
                got.get::<_, String>(12),
                row.status().as_str(),
                "case {case}"
            );
            let applied: AppliedIds = got.get(13);
            let applied: BTreeSet<Uuid> = ids
                .iter()
                .filter(|id| applied.contains(id))
                .copied()
                .collect();
            assert_eq!(
                applied.len(),
                got.get::<_, Vec<u8>>(13).len() / 16,
                "case {case}: an id twice or one too many"
            );
            assert_eq!(applied, ids, "case {case}, order {order}: applied ids");
        }
    }
    // the cases reached both ways: long logs and copies (which the SQL merge hands on)
    assert!(
        long_logs > 10 && copies > 50,
        "long logs {long_logs}, copies {copies}"
    );
}
