//! Deterministic sample events (timestamps, ids and bodies derived from a seed index).
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::TestEvent;

pub fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_760_000_000 + seconds, 0).unwrap()
}

fn ms(seconds: i64) -> String {
    at(seconds).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn id(name: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, name.as_bytes())
}

pub fn event(
    topic: &'static str,
    key: &str,
    event_type: &str,
    t: i64,
    body: serde_json::Value,
    tag: &str,
) -> TestEvent {
    TestEvent {
        topic,
        key: key.to_owned(),
        event_type: event_type.to_owned(),
        event_id: id(&format!("{event_type}/{key}/{tag}")),
        occurred_at: at(t),
        body,
    }
}

pub fn registered(customer: &str, email: &str, t: i64) -> TestEvent {
    event(
        "customers",
        customer,
        "CustomerRegistered",
        t,
        json!({"customer_id": customer, "email": email, "name": format!("Name {customer}"), "registered_at": ms(t)}),
        "r",
    )
}
pub fn email_changed(customer: &str, email: &str, t: i64) -> TestEvent {
    event(
        "customers",
        customer,
        "CustomerEmailChanged",
        t,
        json!({"customer_id": customer, "email": email, "changed_at": ms(t)}),
        &format!("e{t}"),
    )
}
pub fn forgotten(customer: &str, t: i64) -> TestEvent {
    event(
        "customers",
        customer,
        "CustomerForgotten",
        t,
        json!({"customer_id": customer, "forgotten_at": ms(t)}),
        "f",
    )
}
pub fn placed(order: &str, customer: &str, quantity: i64, price: i64, t: i64) -> TestEvent {
    event(
        "orders",
        order,
        "OrderPlaced",
        t,
        json!({
        "order_id": order, "customer_id": customer, "currency": "EUR",
        "items": [{"sku": "tea-01", "name": "Earl Grey", "quantity": quantity, "unit_price_cents": price}],
        "total_cents": quantity * price,
        "shipping_address": {"line1": "12 Baker St", "line2": null, "city": "London", "postal_code": "NW1", "country": "GB"},
        "placed_at": ms(t)}),
        "p",
    )
}
pub fn shipped(order: &str, tracking: &str, t: i64) -> TestEvent {
    event(
        "orders",
        order,
        "OrderShipped",
        t,
        json!({"order_id": order, "carrier": "DHL", "tracking_id": tracking, "shipped_at": ms(t)}),
        &format!("s{t}"),
    )
}
pub fn delivered(order: &str, t: i64) -> TestEvent {
    event(
        "orders",
        order,
        "OrderDelivered",
        t,
        json!({"order_id": order, "delivered_at": ms(t)}),
        "d",
    )
}
pub fn cancelled(order: &str, t: i64) -> TestEvent {
    event(
        "orders",
        order,
        "OrderCancelled",
        t,
        json!({"order_id": order, "reason": "changed my mind", "cancelled_at": ms(t)}),
        "c",
    )
}

/// A shop's worth of events: `customers` customers, `orders` orders with varied lifecycles,
/// some out of order (shipped before placed), a forgotten customer with a late email change.
pub fn shop(customers: usize, orders: usize) -> Vec<TestEvent> {
    let mut events = Vec::new();
    for c in 0..customers {
        let customer = format!("c-{c}");
        events.push(registered(
            &customer,
            &format!("{customer}@example.com"),
            c as i64,
        ));
        if c % 3 == 0 {
            events.push(email_changed(
                &customer,
                &format!("new-{customer}@example.com"),
                1000 + c as i64,
            ));
        }
        if c % 5 == 4 {
            events.push(forgotten(&customer, 2000 + c as i64));
            events.push(email_changed(
                &customer,
                &format!("late-{customer}@example.com"),
                3000 + c as i64,
            ));
        }
    }
    for o in 0..orders {
        let order = format!("o-{o}");
        let customer = format!("c-{}", o % customers.max(1));
        let t = 100 + o as i64;
        let place = placed(&order, &customer, 1 + (o as i64 % 4), 250 + o as i64, t);
        match o % 6 {
            0 => events.push(place),
            1 => {
                events.push(place);
                events.push(shipped(&order, &format!("T{o}"), t + 10));
            }
            2 => {
                // out of order: shipped before placed
                events.push(shipped(&order, &format!("T{o}"), t + 10));
                events.push(place);
                events.push(delivered(&order, t + 20));
            }
            3 => {
                events.push(place);
                events.push(cancelled(&order, t + 5));
            }
            4 => {
                events.push(cancelled(&order, t + 5));
                events.push(place);
            }
            _ => {
                events.push(place);
                events.push(shipped(&order, &format!("T{o}"), t + 10));
                events.push(delivered(&order, t + 20));
            }
        }
    }
    events
}
