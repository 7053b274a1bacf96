//! Sample command bodies of the contract, as the write side accepts them.

use serde_json::{json, Value};

/// A `RegisterCustomer` body.
pub fn customer(id: &str, name: &str) -> Value {
    json!({"customer_id": id, "email": format!("{id}@example.com"), "name": name})
}

/// A `PlaceOrder` body with one line.
pub fn order(id: &str, customer: &str, item: &str, quantity: i64, unit_price_cents: i64) -> Value {
    json!({
        "order_id": id, "customer_id": customer, "currency": "EUR",
        "items": [{"sku": "sku-1", "name": item, "quantity": quantity, "unit_price_cents": unit_price_cents}],
        "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}
    })
}

/// One body of every command of the contract, for the customer `c-{id}` and the order
/// `o-{id}`, in an order the write side accepts them.
pub fn every_command(id: &str) -> Vec<(&'static str, Value)> {
    let customer = format!("c-{id}");
    let order = format!("o-{id}");
    vec![
        (
            "RegisterCustomer",
            json!({"customer_id": customer, "email": "ada@example.com", "name": "Ada Lovelace"}),
        ),
        (
            "ChangeCustomerEmail",
            json!({"customer_id": customer, "email": "ada@lovelace.org"}),
        ),
        (
            "PlaceOrder",
            json!({"order_id": order, "customer_id": customer, "currency": "EUR",
                "items": [{"sku": "tea-01", "name": "Earl Grey tea", "quantity": 2, "unit_price_cents": 450}],
                "shipping_address": {"line1": "12 Baker St", "city": "London", "postal_code": "NW1", "country": "GB"}}),
        ),
        (
            "ShipOrder",
            json!({"order_id": order, "carrier": "DHL", "tracking_id": "JD0001"}),
        ),
        ("DeliverOrder", json!({"order_id": order})),
        (
            "CancelOrder",
            json!({"order_id": order, "reason": "changed my mind"}),
        ),
        ("ForgetCustomer", json!({"customer_id": customer})),
    ]
}
