//! `customer_stats`: per-customer statistics joining the `customers` and `orders` topics.
//!
//! Columns: customer id, name, email, order count, lifetime value per currency (a JSON object
//! `{"EUR": 1250}` in cents, since amounts in different currencies cannot be added), cancelled
//! order count, last order time. Definitions:
//! - `order_count` and `lifetime_value_cents` count placed orders that are not cancelled;
//!   `cancelled_count` the cancelled ones; `last_order_at` is the latest `placed_at` of any
//!   order (cancelled or not);
//! - the email is the one with the latest timestamp (`registered_at` or `changed_at`), the name
//!   the one of the latest registration;
//! - `CustomerForgotten` erases name and email and sets `forgotten`: they never reappear, even
//!   if a `CustomerRegistered` or `CustomerEmailChanged` is replayed or arrives late.
//!
//! Order-safe: orders are kept in a helper table (`customer_stats_orders_v{N}`: order id,
//! customer, currency, total, placed and cancelled times) and the statistics are recomputed from
//! it ([`aggregate`]), so an `OrderCancelled` before its `OrderPlaced`, or orders before the
//! customer's registration, give the same result as the natural order. An order placed again
//! under another customer (a later `placed_at` wins) moves: both customers are recomputed, and
//! it counts only for the new one.
//!
//! Safe with several instances: the `orders` topic is keyed by order id, so two instances can
//! change one customer's orders at the same time. A recompute first locks the customer's row
//! (`SELECT … FOR UPDATE`, after creating it if absent) and only then reads the helper table, in
//! a new statement: under PostgreSQL's default READ COMMITTED isolation that read sees every
//! order committed by the instance that held the lock before, so no instance overwrites
//! another's order (no lost update). A batch locks all the customers it touches up front in
//! sorted order ([`lock_customers`]), so two batches never wait on each other in a cycle.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio_postgres::Transaction;

use crate::error::ProjectionError;
use crate::projection::{versioned_table, Event, Migration, Projection};

/// The projector name.
pub const NAME: &str = "customer_stats";
/// The read model's version.
pub const VERSION: u32 = 1;

fn orders_table() -> String {
    versioned_table("customer_stats_orders", VERSION)
}

/// The `customer_stats` projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomerStatsProjection;

/// The personal part of a customer row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Profile {
    /// Name (erased when forgotten).
    pub name: Option<String>,
    /// When the name was set (registration time; erased when forgotten).
    pub registered_at: Option<DateTime<Utc>>,
    /// Email (erased when forgotten).
    pub email: Option<String>,
    /// When the email was set (erased when forgotten).
    pub email_at: Option<DateTime<Utc>>,
    /// When the customer was (first) forgotten.
    pub forgotten_at: Option<DateTime<Utc>>,
}

/// A customer event.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    /// `CustomerRegistered`.
    Registered {
        /// Name.
        name: String,
        /// Email.
        email: String,
        /// When.
        registered_at: DateTime<Utc>,
    },
    /// `CustomerEmailChanged`.
    EmailChanged {
        /// New email.
        email: String,
        /// When.
        changed_at: DateTime<Utc>,
    },
    /// `CustomerForgotten`.
    Forgotten {
        /// When.
        forgotten_at: DateTime<Utc>,
    },
}

/// Merges a customer event into the profile (pure, commutative, idempotent).
pub fn merge_profile(mut profile: Profile, event: &CustomerEvent) -> Profile {
    match event {
        CustomerEvent::Forgotten { forgotten_at } => {
            profile.forgotten_at = profile
                .forgotten_at
                .min(Some(*forgotten_at))
                .or(Some(*forgotten_at));
        }
        CustomerEvent::Registered {
            name,
            email,
            registered_at,
        } => {
            let new = (*registered_at, name.clone());
            let newer = match (&profile.registered_at, &profile.name) {
                (Some(at), Some(n)) => new > (*at, n.clone()),
                _ => true,
            };
            if newer {
                profile.registered_at = Some(new.0);
                profile.name = Some(new.1);
            }
            profile = merge_email(profile, email, *registered_at);
        }
        CustomerEvent::EmailChanged { email, changed_at } => {
            profile = merge_email(profile, email, *changed_at);
        }
    }
    if profile.forgotten_at.is_some() {
        profile.name = None;
        profile.email = None;
        profile.registered_at = None;
        profile.email_at = None;
    }
    profile
}

/// Reads a customer event: the customer id and what happened; `None` for other event types.
pub fn customer_event(event: &Event) -> Result<Option<(String, CustomerEvent)>, ProjectionError> {
    Ok(Some(match event.event_type() {
        "CustomerRegistered" => {
            let e: Registered = event.parse()?;
            let ev = CustomerEvent::Registered {
                name: e.name,
                email: e.email,
                registered_at: e.registered_at,
            };
            (e.customer_id, ev)
        }
        "CustomerEmailChanged" => {
            let e: EmailChanged = event.parse()?;
            let ev = CustomerEvent::EmailChanged {
                email: e.email,
                changed_at: e.changed_at,
            };
            (e.customer_id, ev)
        }
        "CustomerForgotten" => {
            let e: Forgotten = event.parse()?;
            let ev = CustomerEvent::Forgotten {
                forgotten_at: e.forgotten_at,
            };
            (e.customer_id, ev)
        }
        _ => return Ok(None),
    }))
}

fn merge_email(mut profile: Profile, email: &str, at: DateTime<Utc>) -> Profile {
    let newer = match (&profile.email_at, &profile.email) {
        (Some(current_at), Some(current)) => (at, email) > (*current_at, current.as_str()),
        _ => true,
    };
    if newer {
        profile.email = Some(email.to_owned());
        profile.email_at = Some(at);
    }
    profile
}

/// What the helper table knows about one order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderFact {
    /// Currency, once placed.
    pub currency: Option<String>,
    /// Total in cents, once placed.
    pub total_cents: Option<i64>,
    /// When placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// When cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// The order statistics of a customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Placed, not cancelled.
    pub order_count: i64,
    /// Cancelled after being placed.
    pub cancelled_count: i64,
    /// Sum of non-cancelled totals per currency, in cents.
    pub lifetime_value_cents: BTreeMap<String, i64>,
    /// The latest `placed_at`.
    pub last_order_at: Option<DateTime<Utc>>,
}

/// Computes a customer's statistics from their orders (pure).
pub fn aggregate(orders: &[OrderFact]) -> Stats {
    let mut stats = Stats::default();
    for order in orders {
        let (Some(currency), Some(total), Some(placed_at)) =
            (&order.currency, order.total_cents, order.placed_at)
        else {
            continue; // not placed yet (only a cancellation seen)
        };
        stats.last_order_at = stats.last_order_at.max(Some(placed_at));
        if order.cancelled_at.is_some() {
            stats.cancelled_count += 1;
        } else {
            stats.order_count += 1;
            *stats
                .lifetime_value_cents
                .entry(currency.clone())
                .or_default() += total;
        }
    }
    stats
}

#[derive(Deserialize)]
struct Registered {
    customer_id: String,
    email: String,
    name: String,
    registered_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct EmailChanged {
    customer_id: String,
    email: String,
    changed_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Forgotten {
    customer_id: String,
    forgotten_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Placed {
    order_id: String,
    customer_id: String,
    currency: String,
    total_cents: i64,
    placed_at: DateTime<Utc>,
}
#[derive(Deserialize)]
struct Cancelled {
    order_id: String,
    cancelled_at: DateTime<Utc>,
}

impl CustomerStatsProjection {
    async fn apply_customer(
        &self,
        tx: &Transaction<'_>,
        customer_id: &str,
        event: &CustomerEvent,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let table = versioned_table(NAME, VERSION);
        ensure_customer(tx, customer_id).await?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT name, registered_at, email, email_at, forgotten_at \
                     FROM {table} WHERE customer_id = $1 FOR UPDATE"
                ),
                &[&customer_id],
            )
            .await?;
        let profile = Profile {
            name: row.get(0),
            registered_at: row.get(1),
            email: row.get(2),
            email_at: row.get(3),
            forgotten_at: row.get(4),
        };
        let p = merge_profile(profile, event);
        tx.execute(
            &format!(
                "UPDATE {table} SET name = $2, registered_at = $3, email = $4, email_at = $5, \
                 forgotten_at = $6, forgotten = ($6::timestamptz IS NOT NULL), \
                 updated_at = GREATEST(updated_at, $7) WHERE customer_id = $1"
            ),
            &[
                &customer_id,
                &p.name,
                &p.registered_at,
                &p.email,
                &p.email_at,
                &p.forgotten_at,
                &occurred_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn recompute(
        &self,
        tx: &Transaction<'_>,
        customer_id: &str,
        occurred_at: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        let table = versioned_table(NAME, VERSION);
        // Lock first, read after: see the module docs (lost updates between instances).
        lock_customers(tx, &[customer_id.to_owned()]).await?;
        let orders: Vec<OrderFact> = tx
            .query(
                &format!(
                    "SELECT currency, total_cents, placed_at, cancelled_at FROM {} \
                     WHERE customer_id = $1",
                    orders_table()
                ),
                &[&customer_id],
            )
            .await?
            .iter()
            .map(|row| OrderFact {
                currency: row.get(0),
                total_cents: row.get(1),
                placed_at: row.get(2),
                cancelled_at: row.get(3),
            })
            .collect();
        let stats = aggregate(&orders);
        let value = serde_json::to_value(&stats.lifetime_value_cents)
            .map_err(ProjectionError::permanent)?;
        tx.execute(
            &format!(
                "UPDATE {table} SET order_count = $2, cancelled_count = $3, \
                 lifetime_value_cents = $4, last_order_at = $5, \
                 updated_at = GREATEST(updated_at, $6) WHERE customer_id = $1"
            ),
            &[
                &customer_id,
                &stats.order_count,
                &stats.cancelled_count,
                &value,
                &stats.last_order_at,
                &occurred_at,
            ],
        )
        .await?;
        Ok(())
    }
}

async fn ensure_customer(tx: &Transaction<'_>, customer_id: &str) -> Result<(), ProjectionError> {
    tx.execute(
        &format!(
            "INSERT INTO {} (customer_id) VALUES ($1) ON CONFLICT DO NOTHING",
            versioned_table(NAME, VERSION)
        ),
        &[&customer_id],
    )
    .await?;
    Ok(())
}

/// Creates the rows of these customers if absent and locks them until the transaction ends, in
/// sorted order (the same for every caller, so two transactions never deadlock on them).
pub async fn lock_customers(
    tx: &Transaction<'_>,
    customer_ids: &[String],
) -> Result<(), ProjectionError> {
    let mut ids = customer_ids.to_vec();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let table = versioned_table(NAME, VERSION);
    tx.execute(
        &format!(
            "INSERT INTO {table} (customer_id) SELECT id FROM unnest($1::text[]) AS x(id) \
             ORDER BY id ON CONFLICT DO NOTHING"
        ),
        &[&ids],
    )
    .await?;
    tx.query(
        &format!(
            "SELECT customer_id FROM {table} WHERE customer_id = ANY($1) \
             ORDER BY customer_id FOR UPDATE"
        ),
        &[&ids],
    )
    .await?;
    Ok(())
}

/// The customers a batch changes: those named by its events and the current customers of its
/// orders in the helper table (a cancellation's, or the previous one of a moved order).
async fn customers_of(
    tx: &Transaction<'_>,
    events: &[&Event],
) -> Result<Vec<String>, ProjectionError> {
    #[derive(Deserialize)]
    struct Keys {
        order_id: Option<String>,
        customer_id: Option<String>,
    }
    let mut customers = Vec::new();
    let mut orders = Vec::new();
    for event in events {
        let Ok(keys) = serde_json::from_value::<Keys>(event.data.clone()) else {
            continue; // a malformed event is rejected by `apply`
        };
        customers.extend(keys.customer_id);
        orders.extend(keys.order_id);
    }
    if !orders.is_empty() {
        let rows = tx
            .query(
                &format!(
                    "SELECT DISTINCT customer_id FROM {} \
                     WHERE order_id = ANY($1) AND customer_id IS NOT NULL",
                    orders_table()
                ),
                &[&orders],
            )
            .await?;
        customers.extend(rows.iter().map(|row| row.get::<_, String>(0)));
    }
    Ok(customers)
}

impl Projection for CustomerStatsProjection {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn topics(&self) -> Vec<String> {
        vec!["customers".into(), "orders".into()]
    }

    fn event_types(&self) -> Vec<String> {
        [
            "CustomerRegistered",
            "CustomerEmailChanged",
            "CustomerForgotten",
            "OrderPlaced",
            "OrderCancelled",
        ]
        .map(String::from)
        .to_vec()
    }

    fn migrations(&self) -> Vec<Migration> {
        let table = versioned_table(NAME, VERSION);
        let orders = orders_table();
        vec![Migration::new(
            "001_create",
            format!(
                "CREATE TABLE {table} (
                    customer_id          text PRIMARY KEY,
                    name                 text,
                    email                text,
                    registered_at        timestamptz,
                    email_at             timestamptz,
                    forgotten            boolean NOT NULL DEFAULT false,
                    forgotten_at         timestamptz,
                    order_count          bigint NOT NULL DEFAULT 0,
                    cancelled_count      bigint NOT NULL DEFAULT 0,
                    lifetime_value_cents jsonb NOT NULL DEFAULT '{{}}',
                    last_order_at        timestamptz,
                    updated_at           timestamptz
                );
                CREATE TABLE {orders} (
                    order_id     text PRIMARY KEY,
                    customer_id  text,
                    currency     text,
                    total_cents  bigint,
                    placed_at    timestamptz,
                    cancelled_at timestamptz
                );
                CREATE INDEX {orders}_customer ON {orders} (customer_id);"
            ),
        )]
    }

    fn views(&self) -> Vec<String> {
        vec![NAME.into()]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ProjectionError> {
        let occurred_at = event.envelope.occurred_at;
        match event.event_type() {
            "CustomerRegistered" => {
                let e: Registered = event.parse()?;
                let ev = CustomerEvent::Registered {
                    name: e.name,
                    email: e.email,
                    registered_at: e.registered_at,
                };
                self.apply_customer(tx, &e.customer_id, &ev, occurred_at)
                    .await
            }
            "CustomerEmailChanged" => {
                let e: EmailChanged = event.parse()?;
                let ev = CustomerEvent::EmailChanged {
                    email: e.email,
                    changed_at: e.changed_at,
                };
                self.apply_customer(tx, &e.customer_id, &ev, occurred_at)
                    .await
            }
            "CustomerForgotten" => {
                let e: Forgotten = event.parse()?;
                let ev = CustomerEvent::Forgotten {
                    forgotten_at: e.forgotten_at,
                };
                self.apply_customer(tx, &e.customer_id, &ev, occurred_at)
                    .await
            }
            "OrderPlaced" => {
                let e: Placed = event.parse()?;
                // The placement is a fact of the order: the latest `placed_at` wins (a replayed
                // copy carries the same data; on a tie the first recorded stays). When it wins
                // over a placement under another customer, the order moves: the previous
                // customer is recomputed too, so the order counts for the new one only.
                let previous: Option<String> = tx
                    .query_opt(
                        &format!(
                            "WITH previous AS (SELECT customer_id FROM {0} WHERE order_id = $1) \
                             INSERT INTO {0} (order_id, customer_id, currency, total_cents, placed_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, \
                               currency = EXCLUDED.currency, total_cents = EXCLUDED.total_cents, \
                               placed_at = EXCLUDED.placed_at \
                             WHERE {0}.placed_at IS NULL OR {0}.placed_at < EXCLUDED.placed_at \
                             RETURNING (SELECT customer_id FROM previous)",
                            orders_table()
                        ),
                        &[
                            &e.order_id,
                            &e.customer_id,
                            &e.currency,
                            &e.total_cents,
                            &e.placed_at,
                        ],
                    )
                    .await?
                    .and_then(|row| row.get(0));
                let mut customers = vec![e.customer_id.clone()];
                customers.extend(previous.filter(|p| *p != e.customer_id));
                lock_customers(tx, &customers).await?;
                for customer_id in &customers {
                    self.recompute(tx, customer_id, occurred_at).await?;
                }
                Ok(())
            }
            "OrderCancelled" => {
                let e: Cancelled = event.parse()?;
                let customer: Option<String> = tx
                    .query_one(
                        &format!(
                            "INSERT INTO {0} (order_id, cancelled_at) VALUES ($1, $2) \
                             ON CONFLICT (order_id) DO UPDATE SET cancelled_at = \
                               LEAST(COALESCE({0}.cancelled_at, EXCLUDED.cancelled_at), EXCLUDED.cancelled_at) \
                             RETURNING customer_id",
                            orders_table()
                        ),
                        &[&e.order_id, &e.cancelled_at],
                    )
                    .await?
                    .get(0);
                match customer {
                    Some(customer_id) => self.recompute(tx, &customer_id, occurred_at).await,
                    None => Ok(()), // placed later: the placement recomputes
                }
            }
            other => Err(ProjectionError::permanent(format!(
                "customer_stats does not consume {other}"
            ))),
        }
    }

    /// Locks every customer the batch changes up front, in sorted order, then applies the
    /// events one by one (see the module docs: two instances never deadlock on customers).
    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[&Event],
    ) -> Result<(), ProjectionError> {
        let customers = customers_of(tx, events).await?;
        lock_customers(tx, &customers).await?;
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }
    fn registered(email: &str, t: i64) -> CustomerEvent {
        CustomerEvent::Registered {
            name: "Ada".into(),
            email: email.into(),
            registered_at: at(t),
        }
    }
    fn changed(email: &str, t: i64) -> CustomerEvent {
        CustomerEvent::EmailChanged {
            email: email.into(),
            changed_at: at(t),
        }
    }
    fn forgotten(t: i64) -> CustomerEvent {
        CustomerEvent::Forgotten {
            forgotten_at: at(t),
        }
    }
    fn fold(events: &[CustomerEvent]) -> Profile {
        events.iter().fold(Profile::default(), merge_profile)
    }

    #[test]
    fn given_customer_events_expect_profiles() {
        // (events, expected name, expected email, forgotten)
        type Case = (
            Vec<CustomerEvent>,
            Option<&'static str>,
            Option<&'static str>,
            bool,
        );
        let cases: Vec<Case> = vec![
            (vec![registered("a@x", 0)], Some("Ada"), Some("a@x"), false),
            (
                vec![registered("a@x", 0), changed("b@x", 5)],
                Some("Ada"),
                Some("b@x"),
                false,
            ),
            (
                vec![changed("b@x", 5), registered("a@x", 0)],
                Some("Ada"),
                Some("b@x"),
                false,
            ),
            (vec![registered("a@x", 0), forgotten(6)], None, None, true),
            (
                vec![registered("a@x", 0), forgotten(6), changed("late@x", 9)],
                None,
                None,
                true,
            ),
            (
                vec![forgotten(6), registered("a@x", 0), changed("b@x", 5)],
                None,
                None,
                true,
            ),
        ];
        for (events, name, email, is_forgotten) in cases {
            let p = fold(&events);
            assert_eq!(p.name.as_deref(), name, "{events:?}");
            assert_eq!(p.email.as_deref(), email, "{events:?}");
            assert_eq!(p.forgotten_at.is_some(), is_forgotten, "{events:?}");
        }
    }

    fn any_event() -> impl proptest::strategy::Strategy<Value = CustomerEvent> {
        use proptest::prelude::*;
        prop_oneof![
            (0i64..10, "[ab]").prop_map(|(t, e)| registered(&e, t)),
            (0i64..10, "[cd]").prop_map(|(t, e)| changed(&e, t)),
            (0i64..10).prop_map(forgotten),
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_order_and_duplicates_give_the_same_profile(
            events in proptest::collection::vec(any_event(), 1..8),
        ) {
            let expected = fold(&events);
            let mut reversed: Vec<CustomerEvent> = events.iter().rev().cloned().collect();
            reversed.extend(events.iter().cloned());
            proptest::prop_assert_eq!(fold(&reversed), expected);
        }
    }

    #[test]
    fn aggregates_per_currency_without_cancelled_orders() {
        let order = |cur: &str, total: i64, t: i64, cancelled: bool| OrderFact {
            currency: Some(cur.into()),
            total_cents: Some(total),
            placed_at: Some(at(t)),
            cancelled_at: cancelled.then(|| at(t + 1)),
        };
        let only_cancel = OrderFact {
            currency: None,
            total_cents: None,
            placed_at: None,
            cancelled_at: Some(at(99)),
        };
        let stats = aggregate(&[
            order("EUR", 900, 1, false),
            order("EUR", 100, 2, false),
            order("GBP", 500, 3, false),
            order("EUR", 7000, 4, true),
            only_cancel,
        ]);
        assert_eq!(stats.order_count, 3);
        assert_eq!(stats.cancelled_count, 1);
        assert_eq!(
            stats.lifetime_value_cents,
            BTreeMap::from([("EUR".to_owned(), 1000), ("GBP".to_owned(), 500)])
        );
        assert_eq!(stats.last_order_at, Some(at(4)));
        assert_eq!(aggregate(&[]), Stats::default());
    }
}
