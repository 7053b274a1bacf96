//! The benchmark's sample data, derived deterministically from an index: orders with their
//! lifecycle events (`OrderPlaced`, `OrderShipped`, then `OrderDelivered` or `OrderCancelled`),
//! customers, the `PlaceOrder` commands the write side receives, and the read-model rows and
//! documents those events lead to (the rows come from the projector's own `merge`, so the raw
//! sink limit writes exactly what the projector writes).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use factline_projectors::projections::order_summary::{merge, LineItem, OrderEvent, OrderSummary};
use serde_json::{json, Value};
use uuid::Uuid;

/// Events per order in a backlog: placed, shipped, delivered or cancelled.
pub const EVENTS_PER_ORDER: u64 = 3;

/// Orders are written in chunks: every order of a chunk is placed, then every one shipped, then
/// every one delivered (or cancelled). Events of one order are a chunk apart, as in a real log
/// where many orders progress at once.
pub const CHUNK_ORDERS: u64 = 5_000;

const PRODUCTS: &[&str] = &[
    "Earl Grey tea",
    "Darjeeling tea",
    "Green sencha",
    "Espresso beans",
    "Ceramic teapot",
    "Oolong leaves",
    "Rooibos blend",
    "Matcha whisk",
    "Chai spices",
    "Porcelain cup",
];

fn base_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000, 0).unwrap_or_default()
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One event of a backlog.
#[derive(Debug, Clone)]
pub struct SampleEvent {
    /// Logical topic (`orders` or `customers`).
    pub topic: &'static str,
    /// Short event type (`OrderPlaced`).
    pub event_type: &'static str,
    /// Kafka key (the aggregate id).
    pub key: String,
    /// The event's id.
    pub event_id: Uuid,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// The event body as JSON (timestamps as RFC 3339 strings).
    pub body: Value,
}

/// A deterministic data set: ids are prefixed with `tag` so runs never collide.
#[derive(Debug, Clone)]
pub struct Dataset {
    tag: String,
    customers: u64,
}

impl Dataset {
    /// A data set whose ids start with `tag`, spreading orders over `customers` customers.
    pub fn new(tag: &str, customers: u64) -> Dataset {
        Dataset {
            tag: tag.to_owned(),
            customers: customers.max(1),
        }
    }

    /// The id of order `i`.
    pub fn order_id(&self, i: u64) -> String {
        format!("{}-o{i}", self.tag)
    }

    /// The id of customer `c`.
    pub fn customer_id(&self, c: u64) -> String {
        format!("{}-c{c}", self.tag)
    }

    /// The customer of order `i`.
    pub fn customer_of(&self, i: u64) -> u64 {
        (i * 7919) % self.customers
    }

    /// How many customers there are.
    pub fn customers(&self) -> u64 {
        self.customers
    }

    fn items(i: u64) -> Vec<(String, String, i64, i64)> {
        (0..1 + i % 3)
            .map(|j| {
                let product = ((i + j * 3) % PRODUCTS.len() as u64) as usize;
                (
                    format!("sku-{product:02}"),
                    PRODUCTS[product].to_owned(),
                    (1 + (i + j) % 4) as i64,
                    (199 + (i * 7 + j * 13) % 5000) as i64,
                )
            })
            .collect()
    }

    fn address(i: u64) -> Value {
        json!({"line1": format!("{} Baker Street", 1 + i % 200), "line2": null,
               "city": "London", "postal_code": format!("NW{}", 1 + i % 9), "country": "GB"})
    }

    /// The body of a `PlaceOrder` command for order `i` (derived fields absent).
    pub fn place_order_command(&self, i: u64) -> Value {
        self.place_order_command_with_id(&self.order_id(i), i)
    }

    /// The body of a `PlaceOrder` command with an explicit order id, shaped like order `i`.
    pub fn place_order_command_with_id(&self, order_id: &str, i: u64) -> Value {
        let items: Vec<Value> = Self::items(i)
            .into_iter()
            .map(|(sku, name, quantity, price)| {
                json!({"sku": sku, "name": name, "quantity": quantity, "unit_price_cents": price})
            })
            .collect();
        let address = Self::address(i);
        let mut address = address;
        if let Some(map) = address.as_object_mut() {
            map.remove("line2");
        }
        json!({"order_id": order_id, "customer_id": self.customer_id(self.customer_of(i)),
               "currency": "EUR", "items": items, "shipping_address": address})
    }

    /// Event `step` (0 placed, 1 shipped, 2 delivered or cancelled) of order `i`.
    pub fn order_event(&self, i: u64, step: u64) -> SampleEvent {
        let order_id = self.order_id(i);
        let placed_at = base_time() + Duration::milliseconds(i as i64 * 10);
        let (event_type, at, body) = match step {
            0 => {
                let items = Self::items(i);
                let total: i64 = items.iter().map(|(_, _, q, p)| q * p).sum();
                let items: Vec<Value> = items
                    .into_iter()
                    .map(|(sku, name, quantity, price)| {
                        json!({"sku": sku, "name": name, "quantity": quantity, "unit_price_cents": price})
                    })
                    .collect();
                (
                    "OrderPlaced",
                    placed_at,
                    json!({"order_id": order_id, "customer_id": self.customer_id(self.customer_of(i)),
                           "currency": "EUR", "items": items, "total_cents": total,
                           "shipping_address": Self::address(i), "placed_at": ts(placed_at)}),
                )
            }
            1 => {
                let at = placed_at + Duration::hours(2);
                (
                    "OrderShipped",
                    at,
                    json!({"order_id": order_id, "carrier": if i.is_multiple_of(2) { "DHL" } else { "UPS" },
                           "tracking_id": format!("TRK{i:010}"), "shipped_at": ts(at)}),
                )
            }
            _ if i.is_multiple_of(10) => {
                let at = placed_at + Duration::hours(5);
                (
                    "OrderCancelled",
                    at,
                    json!({"order_id": order_id, "reason": "changed my mind", "cancelled_at": ts(at)}),
                )
            }
            _ => {
                let at = placed_at + Duration::days(2);
                (
                    "OrderDelivered",
                    at,
                    json!({"order_id": order_id, "delivered_at": ts(at)}),
                )
            }
        };
        SampleEvent {
            topic: "orders",
            event_type,
            event_id: Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("{}/{event_type}", order_id).as_bytes(),
            ),
            key: order_id,
            occurred_at: at,
            body,
        }
    }

    /// `CustomerRegistered` of customer `c`.
    pub fn customer_registered(&self, c: u64) -> SampleEvent {
        let customer_id = self.customer_id(c);
        let at = base_time() - Duration::days(30) + Duration::seconds(c as i64);
        SampleEvent {
            topic: "customers",
            event_type: "CustomerRegistered",
            event_id: Uuid::new_v5(
                &Uuid::NAMESPACE_URL,
                format!("{customer_id}/registered").as_bytes(),
            ),
            occurred_at: at,
            body: json!({"customer_id": customer_id, "email": format!("{customer_id}@example.com"),
                         "name": format!("Customer {c}"), "registered_at": ts(at)}),
            key: customer_id,
        }
    }

    /// The `(order index, step)` of the `n`-th order event of a backlog (chunked, see
    /// [`CHUNK_ORDERS`]). A backlog of `events` order events has `events / 3` orders.
    pub fn backlog_slot(n: u64, total_orders: u64) -> (u64, u64) {
        let per_chunk = CHUNK_ORDERS * EVENTS_PER_ORDER;
        let chunk = n / per_chunk;
        let first = chunk * CHUNK_ORDERS;
        let size = CHUNK_ORDERS.min(total_orders.saturating_sub(first)).max(1);
        let within = n - chunk * per_chunk;
        (first + within % size, within / size)
    }
}

/// The projector's view of a sample event, for computing rows with its own `merge`.
pub fn order_event(event: &SampleEvent) -> Option<OrderEvent> {
    let b = &event.body;
    let s = |k: &str| {
        b.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let order_id = s("order_id");
    Some(match event.event_type {
        "OrderPlaced" => OrderEvent::Placed {
            order_id,
            customer_id: s("customer_id"),
            currency: s("currency"),
            items: b
                .get("items")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|i| LineItem {
                            quantity: i.get("quantity").and_then(Value::as_i64).unwrap_or(0),
                            unit_price_cents: i
                                .get("unit_price_cents")
                                .and_then(Value::as_i64)
                                .unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            total_cents: b.get("total_cents").and_then(Value::as_i64).unwrap_or(0),
            placed_at: event.occurred_at,
        },
        "OrderShipped" => OrderEvent::Shipped {
            order_id,
            carrier: s("carrier"),
            tracking_id: s("tracking_id"),
            shipped_at: event.occurred_at,
        },
        "OrderDelivered" => OrderEvent::Delivered {
            order_id,
            delivered_at: event.occurred_at,
        },
        "OrderCancelled" => OrderEvent::Cancelled {
            order_id,
            reason: s("reason"),
            cancelled_at: event.occurred_at,
        },
        _ => return None,
    })
}

/// The `order_summary` row after `event`, given the row before it.
pub fn summary_after(previous: Option<OrderSummary>, event: &SampleEvent) -> Option<OrderSummary> {
    let order_event = order_event(event)?;
    Some(merge(previous, &order_event, event.occurred_at))
}

/// The `order_search` document (see the session contract) for a summary row, the placed
/// event's body (line items) and the customer's name and email.
pub fn order_search_doc(row: &OrderSummary, placed: Option<&Value>, customer: &Value) -> Value {
    let t = |at: &Option<DateTime<Utc>>| at.map(ts);
    let items = placed
        .and_then(|p| p.get("items"))
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let item_names: Vec<String> = items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i.get("name").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "order_id": row.order_id, "customer_id": row.customer_id, "status": row.status().as_str(),
        "currency": row.currency, "total_cents": row.total_cents, "item_count": row.item_count,
        "items": items, "item_names": item_names.join(" "),
        "customer_name": customer.get("name"), "customer_email": customer.get("email"),
        "placed_at": t(&row.placed_at), "shipped_at": t(&row.shipped_at),
        "delivered_at": t(&row.delivered_at), "cancelled_at": t(&row.cancelled_at),
        "carrier": row.carrier, "tracking_id": row.tracking_id, "cancel_reason": row.cancel_reason,
        "updated_at": t(&row.updated_at),
    })
}

/// The `event_index` document (see the session contract) of an event at a position.
pub fn event_index_doc(event: &SampleEvent, topic: &str, partition: i32, offset: i64) -> Value {
    let mut text = Vec::new();
    collect_strings(&event.body, &mut text);
    json!({
        "event_id": event.event_id, "event_type": event.event_type, "key": event.key,
        "topic": topic, "partition": partition, "offset": offset,
        "timestamp": ts(event.occurred_at), "occurred_at": ts(event.occurred_at),
        "correlation_id": format!("bench-{}", event.key),
        "headers": {"event_id": event.event_id, "event_type": event.event_type},
        "payload": event.body, "text": text.join(" "),
        "customer_id": event.body.get("customer_id"), "forgotten": false,
    })
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(m) => m.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn backlog_slots_cover_every_event_once_and_in_lifecycle_order() {
        for orders in [
            1u64,
            7,
            CHUNK_ORDERS,
            CHUNK_ORDERS + 3,
            2 * CHUNK_ORDERS + 1,
        ] {
            let events = orders * EVENTS_PER_ORDER;
            let mut seen = HashSet::new();
            let mut next_step = vec![0u64; orders as usize];
            for n in 0..events {
                let (i, step) = Dataset::backlog_slot(n, orders);
                assert!(i < orders, "order {i} of {orders}");
                assert_eq!(next_step[i as usize], step, "order {i} out of order");
                next_step[i as usize] += 1;
                assert!(seen.insert((i, step)));
            }
            assert_eq!(seen.len() as u64, events);
        }
    }

    #[test]
    fn rows_follow_the_lifecycle() {
        let data = Dataset::new("t", 10);
        let mut row = None;
        for step in 0..3 {
            row = summary_after(row, &data.order_event(10, step));
        }
        let row = row.unwrap();
        assert_eq!(row.status().as_str(), "cancelled");
        assert!(row.total_cents.unwrap() > 0);
        let events: Vec<_> = (0..3).map(|s| data.order_event(11, s)).collect();
        let row = events.iter().fold(None, summary_after).unwrap();
        assert_eq!(row.status().as_str(), "delivered");
    }

    #[test]
    fn commands_and_events_are_valid_for_the_catalog() {
        let data = Dataset::new("t", 10);
        let catalog = factline_schemas::Catalog::builtin();
        let command = catalog.command("PlaceOrder").unwrap();
        command
            .build_event(data.place_order_command(3), Utc::now())
            .unwrap();
        for step in 0..3 {
            for i in [0, 1, 10] {
                let event = data.order_event(i, step);
                let schema = &catalog.event(event.event_type).unwrap().schema;
                factline_schemas::json_to_avro(schema, event.body.clone()).unwrap();
            }
        }
        let event = data.customer_registered(1);
        let schema = &catalog.event(event.event_type).unwrap().schema;
        factline_schemas::json_to_avro(schema, event.body.clone()).unwrap();
    }
}
