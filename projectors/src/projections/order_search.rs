//! `order_search`: one Elasticsearch document per order for full-text search (line item names,
//! the customer's name) and filters (status, customer, dates, total). Alias `order_search`,
//! mapping `projectors/mappings/order_search.json`.
//!
//! The order's own fields are the [`order_summary`](super::order_summary) merge (pure,
//! commutative: any arrival order gives the same document), plus the line items of the winning
//! placement. The customer's name and email come from a second topic: customer events build a
//! side index `order_search_customers` (one document per customer, merged like
//! [`customer_stats`](super::customer_stats): newest email wins, forgetting is sticky and
//! erases), and the runtime's join copies them onto every order of that customer whenever the
//! order or the customer changes ([`enrich`](SearchProjection::enrich)). A forgotten customer's
//! orders carry `customer_name` and `customer_email` null.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::customer_stats::{customer_event, merge_profile, Profile};
use super::order_summary::{merge, OrderEvent, OrderSummary};
use crate::error::ProjectionError;
use crate::projection::Event;
use crate::search::{DocRef, IndexSpec, Join, SearchProjection, BOOKKEEPING};

/// The projector name (and base name of the alias).
pub const NAME: &str = "order_search";
/// The read model's version.
pub const VERSION: u32 = 1;
/// The side index of customers.
pub const CUSTOMERS: &str = "order_search_customers";

/// The mapping of the order documents.
pub const MAPPING: &str = include_str!("../../mappings/order_search.json");
/// The mapping of the customer side index.
pub const CUSTOMERS_MAPPING: &str = include_str!("../../mappings/order_search_customers.json");

/// The `order_search` projection.
#[derive(Debug, Clone)]
pub struct OrderSearchProjection {
    indices: Vec<IndexSpec>,
}

impl OrderSearchProjection {
    /// The projection with its mappings parsed: a mapping file that is not JSON is an error
    /// here, at start, never an index created without a mapping.
    pub fn new() -> Result<OrderSearchProjection, ProjectionError> {
        Ok(OrderSearchProjection {
            indices: vec![
                IndexSpec::new(NAME, MAPPING)?,
                IndexSpec::new(CUSTOMERS, CUSTOMERS_MAPPING)?,
            ],
        })
    }
}

/// A line item as indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// SKU.
    pub sku: String,
    /// Name (full text).
    pub name: String,
    /// Units.
    pub quantity: i64,
    /// Price per unit in cents.
    pub unit_price_cents: i64,
}

#[derive(Deserialize)]
struct PlacedItems {
    items: Vec<Item>,
}

fn ts(at: Option<DateTime<Utc>>) -> Value {
    at.map(|t| json!(t.to_rfc3339_opts(SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn parse_ts(doc: &Value, field: &str) -> Option<DateTime<Utc>> {
    doc.get(field)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn text(doc: &Value, field: &str) -> Option<String> {
    doc.get(field).and_then(Value::as_str).map(str::to_owned)
}

/// The order summary held by an order document.
pub fn summary_of(doc: &Value) -> OrderSummary {
    OrderSummary {
        order_id: text(doc, "order_id").unwrap_or_default(),
        customer_id: text(doc, "customer_id"),
        currency: text(doc, "currency"),
        total_cents: doc.get("total_cents").and_then(Value::as_i64),
        item_count: doc.get("item_count").and_then(Value::as_i64),
        placed_at: parse_ts(doc, "placed_at"),
        shipped_at: parse_ts(doc, "shipped_at"),
        delivered_at: parse_ts(doc, "delivered_at"),
        cancelled_at: parse_ts(doc, "cancelled_at"),
        cancel_reason: text(doc, "cancel_reason"),
        carrier: text(doc, "carrier"),
        tracking_id: text(doc, "tracking_id"),
        updated_at: parse_ts(doc, "updated_at"),
    }
}

fn placement(s: &OrderSummary) -> Option<(DateTime<Utc>, String, String, i64, i64)> {
    Some((
        s.placed_at?,
        s.customer_id.clone()?,
        s.currency.clone()?,
        s.total_cents?,
        s.item_count?,
    ))
}

/// Merges an order event into an order document (pure, commutative, idempotent).
pub fn merge_order(
    current: Option<&Value>,
    event: &OrderEvent,
    occurred_at: DateTime<Utc>,
    items: &[Item],
) -> Value {
    let before = current.map(summary_of);
    let old_items: Vec<Item> = current
        .and_then(|d| serde_json::from_value(d["items"].clone()).ok())
        .unwrap_or_default();
    let row = merge(before.clone(), event, occurred_at);
    let mut new_items = old_items.clone();
    if let OrderEvent::Placed { .. } = event {
        let after = placement(&row);
        let this = merge(None, event, occurred_at);
        if after.is_some() && after == placement(&this) {
            // this placement won; on a tie with the current one, the larger item list wins
            let tie = before.as_ref().and_then(placement) == after;
            let key = |items: &[Item]| serde_json::to_string(items).unwrap_or_default();
            if !tie || key(items) > key(&old_items) {
                new_items = items.to_vec();
            }
        }
    }
    let mut doc = json!({
        "order_id": row.order_id,
        "customer_id": row.customer_id,
        "status": row.status().as_str(),
        "currency": row.currency,
        "total_cents": row.total_cents,
        "item_count": row.item_count,
        "items": new_items,
        "item_names": new_items.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        "placed_at": ts(row.placed_at),
        "shipped_at": ts(row.shipped_at),
        "delivered_at": ts(row.delivered_at),
        "cancelled_at": ts(row.cancelled_at),
        "carrier": row.carrier,
        "tracking_id": row.tracking_id,
        "cancel_reason": row.cancel_reason,
        "updated_at": ts(row.updated_at),
        "customer_name": Value::Null,
        "customer_email": Value::Null,
    });
    if let Some(current) = current {
        for field in ["customer_name", "customer_email", BOOKKEEPING] {
            if let Some(v) = current.get(field) {
                doc[field] = v.clone();
            }
        }
    }
    doc
}

/// The customer profile held by a customer document.
pub fn profile_of(doc: &Value) -> Profile {
    Profile {
        name: text(doc, "name"),
        registered_at: parse_ts(doc, "registered_at"),
        email: text(doc, "email"),
        email_at: parse_ts(doc, "email_at"),
        forgotten_at: parse_ts(doc, "forgotten_at"),
    }
}

/// A customer document from its id, profile and bookkeeping.
pub fn customer_doc(customer_id: &str, profile: &Profile, bookkeeping: Option<&Value>) -> Value {
    let mut doc = json!({
        "customer_id": customer_id,
        "name": profile.name,
        "email": profile.email,
        "registered_at": ts(profile.registered_at),
        "email_at": ts(profile.email_at),
        "forgotten": profile.forgotten_at.is_some(),
        "forgotten_at": ts(profile.forgotten_at),
    });
    if let Some(b) = bookkeeping {
        doc[BOOKKEEPING] = b.clone();
    }
    doc
}

/// Copies the customer's current name and email onto an order (null when unknown or forgotten).
pub fn with_customer(mut order: Value, customer: Option<&Value>) -> Value {
    let forgotten = customer.is_some_and(|c| c["forgotten"] == Value::Bool(true));
    let field = |name: &str| match customer {
        Some(c) if !forgotten => c.get(name).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    };
    order["customer_name"] = field("name");
    order["customer_email"] = field("email");
    order
}

impl SearchProjection for OrderSearchProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn topics(&self) -> Vec<String> {
        vec!["orders".into(), "customers".into()]
    }

    fn event_types(&self) -> Vec<String> {
        [
            "OrderPlaced",
            "OrderShipped",
            "OrderDelivered",
            "OrderCancelled",
            "CustomerRegistered",
            "CustomerEmailChanged",
            "CustomerForgotten",
        ]
        .map(String::from)
        .to_vec()
    }

    fn indices(&self) -> Vec<IndexSpec> {
        self.indices.clone()
    }

    fn targets(&self, event: &Event) -> Result<Vec<DocRef>, ProjectionError> {
        if let Some((customer_id, _)) = customer_event(event)? {
            return Ok(vec![DocRef::new(CUSTOMERS, customer_id)]);
        }
        let order = OrderEvent::from_event(event)?;
        order.validate()?;
        Ok(vec![DocRef::new(NAME, order.order_id())])
    }

    fn apply(
        &self,
        doc: &DocRef,
        current: Option<Value>,
        event: &Event,
    ) -> Result<Option<Value>, ProjectionError> {
        if let Some((customer_id, ev)) = customer_event(event)? {
            let profile = current.as_ref().map(profile_of).unwrap_or_default();
            let profile = merge_profile(profile, &ev);
            let bookkeeping = current.as_ref().and_then(|c| c.get(BOOKKEEPING));
            return Ok(Some(customer_doc(&customer_id, &profile, bookkeeping)));
        }
        let order = OrderEvent::from_event(event)?;
        if order.order_id() != doc.id {
            return Err(ProjectionError::permanent("event of another order"));
        }
        let items: Vec<Item> = match &order {
            OrderEvent::Placed { .. } => event.parse::<PlacedItems>()?.items,
            _ => Vec::new(),
        };
        Ok(Some(merge_order(
            current.as_ref(),
            &order,
            event.envelope.occurred_at,
            &items,
        )))
    }

    /// Orders and customers are never deleted (forgetting erases fields).
    fn deletes(&self) -> bool {
        false
    }

    fn join(&self) -> Option<Join> {
        Some(Join {
            field: "customer_id".into(),
            id_field: "order_id".into(),
            side: CUSTOMERS.into(),
            side_topics: vec!["customers".into()],
        })
    }

    fn enrich(&self, doc: Value, side: Option<&Value>) -> Value {
        with_customer(doc, side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projections::customer_stats::CustomerEvent;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn item(name: &str) -> Item {
        Item {
            sku: "s".into(),
            name: name.into(),
            quantity: 2,
            unit_price_cents: 5,
        }
    }

    fn placed(t: i64) -> OrderEvent {
        OrderEvent::Placed {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            items: Vec::new(),
            total_cents: 10,
            placed_at: at(t),
        }
    }

    fn shipped(t: i64) -> OrderEvent {
        OrderEvent::Shipped {
            order_id: "o-1".into(),
            carrier: "DHL".into(),
            tracking_id: format!("T{t}"),
            shipped_at: at(t),
        }
    }

    fn fold(events: &[(OrderEvent, Vec<Item>)]) -> Value {
        let mut doc: Option<Value> = None;
        for (e, items) in events {
            doc = Some(merge_order(doc.as_ref(), e, at(0), items));
        }
        doc.unwrap()
    }

    #[test]
    fn any_order_gives_the_same_document() {
        let events = vec![
            (placed(1), vec![item("Earl Grey")]),
            (shipped(5), vec![]),
            (placed(1), vec![item("Earl Grey")]),
            (shipped(3), vec![]),
        ];
        let forward = fold(&events);
        let mut reversed = events.clone();
        reversed.reverse();
        assert_eq!(forward, fold(&reversed));
        assert_eq!(forward["status"], "shipped");
        assert_eq!(forward["tracking_id"], "T5");
        assert_eq!(forward["item_names"], json!(["Earl Grey"]));
        assert_eq!(forward["placed_at"], "2023-11-14T22:13:21.000Z");
    }

    #[test]
    fn customer_fields_follow_the_customer_and_forgetting_erases_them() {
        let order = fold(&[(placed(1), vec![item("Tea")])]);
        let profile = merge_profile(
            Profile::default(),
            &CustomerEvent::Registered {
                name: "Ada".into(),
                email: "ada@x".into(),
                registered_at: at(0),
            },
        );
        let customer = customer_doc("c-1", &profile, None);
        let enriched = with_customer(order.clone(), Some(&customer));
        assert_eq!(enriched["customer_name"], "Ada");
        assert_eq!(enriched["customer_email"], "ada@x");
        assert_eq!(with_customer(enriched.clone(), Some(&customer)), enriched);
        // a later order event keeps the customer fields
        let later = merge_order(Some(&enriched), &shipped(9), at(9), &[]);
        assert_eq!(later["customer_name"], "Ada");
        let gone = merge_profile(
            profile,
            &CustomerEvent::Forgotten {
                forgotten_at: at(5),
            },
        );
        let late = merge_profile(
            gone,
            &CustomerEvent::EmailChanged {
                email: "late@x".into(),
                changed_at: at(9),
            },
        );
        let forgotten = with_customer(later, Some(&customer_doc("c-1", &late, None)));
        assert_eq!(forgotten["customer_name"], Value::Null);
        assert_eq!(forgotten["customer_email"], Value::Null);
        assert_eq!(with_customer(order, None)["customer_name"], Value::Null);
    }

    #[test]
    fn the_mapping_declares_every_document_field() {
        let mapping: Value = serde_json::from_str(MAPPING).unwrap();
        let properties = mapping["mappings"]["properties"].as_object().unwrap();
        let doc = fold(&[(placed(1), vec![item("Tea")])]);
        for field in doc.as_object().unwrap().keys() {
            assert!(properties.contains_key(field), "{field} not mapped");
        }
    }
}
